//! How an XDP program is attached: the daemon's `--xdp-mode` and
//! `xlb decap --mode` take the same three values.

use aya::programs::XdpMode;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native where the driver has it, else generic.
    #[default]
    Auto,
    /// Native XDP in the driver.
    Native,
    /// Generic XDP, after the stack allocated the skb (slower).
    Generic,
}

impl AttachMode {
    /// As written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    pub(crate) fn xdp(self) -> XdpMode {
        match self {
            Self::Auto => XdpMode::Default,
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}
