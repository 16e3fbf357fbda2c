//! `xlb decap`: the backend side of IPIP and GUE, attached until a signal.

use std::net::IpAddr;

use xlb_dataplane::decap::{DecapCounters, DecapError, DecapOptions, DecapProgram};

use super::output::{Failure, Output, print_json};

/// `xlb decap`: run until a signal, then print the counters.
pub(super) fn command(output: Output, opts: DecapOptions) -> Result<(), Failure> {
    // The same three as `xlb run`: it loads and attaches an XDP program too.
    crate::daemon::privileges::check("xlb decap", crate::daemon::privileges::DAEMON)
        .map_err(Failure::internal)?;
    let counters = run(&opts).map_err(|e| {
        let message = format!("decap on {}: {e}", opts.interface);
        if e.is_bad_input() {
            Failure::bad_input(message)
        } else {
            Failure::internal(message)
        }
    })?;
    match output {
        Output::Json => print_json(&serde_json::json!({
            "schema_version": xlb_core::status::SCHEMA_VERSION,
            "interface": opts.interface,
            "packets": counters,
        })),
        _ => print!("{}", counters.render_table()),
    }
    Ok(())
}

/// Run the decap program on the interface until SIGINT or SIGTERM; its
/// counters at the end.
fn run(opts: &DecapOptions) -> Result<DecapCounters, DecapError> {
    let sources = xlb_dataplane::decap::sources_to_hold(&opts.from)?;
    let found = xlb_dataplane::decap::interface_addresses(&opts.interface)?;
    let addresses =
        xlb_dataplane::decap::addresses_to_hold(&opts.interface, &found, &opts.extra_addresses)?;
    for any in sources.iter().filter(|p| p.is_any()) {
        log::warn!(
            "xlb decap: --from {any} accepts tunnel packets from every {} source: anyone who \
             can reach {} can inject packets with a forged inner source past the filters that \
             judge the outer one (CVE-2020-10136); name the balancers' prefixes instead",
            if any.address().is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            },
            opts.interface
        );
    }
    let mut decap = DecapProgram::load()?;
    for ip in &addresses {
        decap.add_address(*ip)?;
    }
    for prefix in &sources {
        decap.add_source(*prefix)?;
    }
    decap.set_gue_port(opts.gue_port)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DecapError::Signal)?;
    // The handlers go in before the program is attached: a signal sent as
    // soon as we report "attached" must stop us cleanly, not kill us.
    let (mut term, mut int) = runtime
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(DecapError::Signal)?;

    decap.attach(&opts.interface, opts.mode)?;
    let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    let from: Vec<String> = sources.iter().map(ToString::to_string).collect();
    log::info!(
        "xlb decap: attached to {} ({} mode); decapsulating IPIP and GUE (UDP port {}) \
         addressed to {}, from {} (other sources dropped)",
        opts.interface,
        opts.mode.name(),
        opts.gue_port,
        list.join(", "),
        from.join(", ")
    );
    let signal = runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    });
    decap.detach()?;
    let counters = decap.counters()?;
    log::info!(
        "xlb decap: {signal}: detached from {}; {} packets decapsulated, {} refused \
         (source outside --from)",
        opts.interface,
        counters.decapsulated(),
        counters.source_refused
    );
    Ok(counters)
}
