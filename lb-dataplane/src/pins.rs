//! Pins: the balancer's maps and its XDP link live in
//! `<bpffs>/xlb/<interface>/` (one file per map, named as in lb-common, and
//! `link`), so forwarding outlives the daemon (SIGTERM, a crash, SIGKILL).
//!
//! A new daemon checks the layout version the old one wrote into XLB_CONFIG
//! (and each pinned map's type and sizes) before its program is loaded over
//! the pinned maps, then puts its program under the live link with one
//! bpf_link_update: the old program runs until the new one replaces it, so
//! no packet goes unprocessed. `xlb detach` (`PinDir::remove`) unpins the link
//! (which detaches the program) and every map.
//!
//! What the maps hold is read back here (`read_live`) and, where it differs
//! from the revision being adopted, rewritten (`reconcile`); the pure half of
//! adoption is `adopt::adopt`.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::MapData;
use aya::programs::{
    ProgramError, Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use lb_common::{
    Backend as KernelBackend, GlobalConfig, LAYOUT_UPGRADES_FROM, LAYOUT_VERSION, VipKey, maps,
};

use crate::HostInterface;
use crate::error::{DataplaneError, PinError, io_err, map_err};
use crate::handle::{Dataplane, Installed, possible_cpus};
use crate::mmap::MappedArray;
use xlb_core::adopt::LiveMaps;
use xlb_core::state::{Desired, kernel_backend};

/// Where bpffs is normally mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// The link's pin, beside the maps'.
pub const LINK_PIN: &str = "link";
/// How long a fresh attach waits for an XDP program that is going away (a
/// killed daemon's link whose last reference the kernel is still
/// releasing) before it reports the interface as taken.
const BUSY_WAIT: Duration = Duration::from_secs(3);

/// `layout_version`'s offset in `GlobalConfig`: fixed for every layout, so
/// any xlb can read which layout an older or newer one wrote.
const LAYOUT_VERSION_OFFSET: usize = 16;
const _: () = assert!(std::mem::offset_of!(GlobalConfig, layout_version) == LAYOUT_VERSION_OFFSET);

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// True when `path` is the root of a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Make sure `bpffs` is a bpffs mount: the default place is mounted when it
/// is not (as systemd does at boot); any other path must be one already.
pub fn ensure_bpffs(bpffs: &Path) -> Result<(), PinError> {
    if is_bpffs(bpffs) {
        return Ok(());
    }
    let path = bpffs.display().to_string();
    if bpffs != Path::new(DEFAULT_BPFFS) {
        return Err(PinError::NotBpffs { path });
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, target, fstype) = (c("bpf"), c(&path), c("bpf"));
    // SAFETY: plain C strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(PinError::Mount {
            path,
            source: io::Error::last_os_error(),
        });
    }
    log::warn!(
        "mounted a bpffs on {path}: the pins last as long as this mount. In a private mount \
         namespace (`ip netns exec`, systemd's PrivateMounts=) it ends with the daemon, and \
         forwarding with it; mount bpffs on the host instead (systemd does at boot)"
    );
    Ok(())
}

/// Where one interface's pins live.
#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
    interface: String,
}

/// What a start found pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pinned {
    /// Pinned maps, by name.
    pub maps: Vec<&'static str>,
    pub link: bool,
    /// The layout version in XLB_CONFIG: None without a pinned XLB_CONFIG, 0
    /// when no daemon ever wrote it (nothing was applied).
    pub layout_version: Option<u32>,
}

impl Pinned {
    /// A daemon applied something into these maps: adopt it.
    pub fn holds_state(&self) -> bool {
        self.layout_version.is_some_and(|v| v != 0)
    }
}

/// What `PinDir::remove` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub dir: String,
    pub link: bool,
    pub maps: Vec<String>,
}

/// Where the balancer is now attached, and how it got there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, pinned.
    Fresh { program_id: u32 },
    /// Our program replaced `old_program_id` under the pinned link.
    Replaced {
        old_program_id: u32,
        program_id: u32,
    },
}

impl PinDir {
    pub fn new(bpffs: &Path, interface: &str) -> Self {
        Self {
            dir: bpffs.join("xlb").join(interface),
            interface: interface.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_path(&self) -> PathBuf {
        self.dir.join(LINK_PIN)
    }

    /// Create the directory (root only).
    pub fn create(&self) -> Result<(), PinError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_at("creating", &self.dir))
    }

    /// What is pinned, checked against the object a start is about to load
    /// over it: the layout version first, then each pinned map's type, key
    /// and value sizes and entries (the connection table's against
    /// `conn_table_size`). A mismatch is refused before anything is loaded.
    pub fn inspect(&self, object: &[u8], conn_table_size: u32) -> Result<Pinned, DataplaneError> {
        let mut found = Pinned {
            link: self.link_path().exists(),
            ..Pinned::default()
        };
        let config_path = self.map_path(maps::CONFIG);
        if config_path.exists() {
            let version = self.read_layout_version(&config_path)?;
            if version != 0 && version != LAYOUT_VERSION && version != LAYOUT_UPGRADES_FROM {
                return Err(PinError::LayoutMismatch {
                    dir: self.dir.display().to_string(),
                    pinned: version,
                    ours: LAYOUT_VERSION,
                    interface: self.interface.clone(),
                }
                .into());
            }
            found.layout_version = Some(version);
        }
        let obj = aya_obj::Object::parse(object).map_err(|e| {
            DataplaneError::Pin(PinError::MapMismatch {
                path: "(object)".into(),
                detail: e.to_string(),
                interface: self.interface.clone(),
            })
        })?;
        let cpus = possible_cpus()? as u32;
        for name in maps::ALL {
            let path = self.map_path(name);
            if !path.exists() {
                continue;
            }
            let Some(def) = obj.maps.get(name) else {
                continue;
            };
            let info = MapData::from_pin(&path)
                .and_then(|m| m.info())
                .map_err(|source| PinError::Map {
                    path: path.display().to_string(),
                    source,
                })?;
            let conns = name == maps::CONNS || name == maps::CONNS_V4;
            let entries = match name {
                maps::VIP_STATS => maps::MAX_VIPS * cpus,
                maps::BACKEND_STATS => maps::MAX_BACKENDS * cpus,
                _ if conns => conn_table_size,
                _ => def.max_entries(),
            };
            if conns && info.max_entries() != conn_table_size {
                return Err(PinError::ConnTableSize {
                    dir: self.dir.display().to_string(),
                    wanted: conn_table_size,
                    pinned: info.max_entries(),
                    interface: self.interface.clone(),
                }
                .into());
            }
            let pinned = (info.key_size(), info.value_size(), info.max_entries());
            let ours = (def.key_size(), def.value_size(), entries);
            let type_ok = info.map_type().is_ok_and(|t| t as u32 == def.map_type());
            if pinned != ours || !type_ok {
                return Err(PinError::MapMismatch {
                    path: path.display().to_string(),
                    detail: format!(
                        "pinned (key, value, entries) {pinned:?}, type {:?}; expected {ours:?}, type {}",
                        info.map_type().ok(),
                        def.map_type()
                    ),
                    interface: self.interface.clone(),
                }
                .into());
            }
            found.maps.push(name);
        }
        Ok(found)
    }

    /// The layout version at its fixed offset in XLB_CONFIG's entry, whatever
    /// the entry's size (a newer or older layout's).
    fn read_layout_version(&self, path: &Path) -> Result<u32, PinError> {
        let map_error = |source| PinError::Map {
            path: path.display().to_string(),
            source,
        };
        let map = MapData::from_pin(path).map_err(map_error)?;
        let info = map.info().map_err(map_error)?;
        let value_size = info.value_size() as usize;
        if info.key_size() != 4 || value_size < LAYOUT_VERSION_OFFSET + 4 {
            return Err(PinError::MapMismatch {
                path: path.display().to_string(),
                detail: format!(
                    "key of {} bytes, value of {value_size} bytes: not an xlb config map",
                    info.key_size()
                ),
                interface: self.interface.clone(),
            });
        }
        let value = crate::sys::lookup_elem(map.fd().as_fd(), 0, value_size)
            .map_err(io_at("reading", path))?;
        let bytes = &value[LAYOUT_VERSION_OFFSET..LAYOUT_VERSION_OFFSET + 4];
        Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// Unpin the link (the kernel detaches the program once no one holds
    /// it) and every map (freed once no program or process holds them),
    /// then remove the directory.
    pub fn remove(&self) -> Result<Removed, PinError> {
        let mut removed = Removed {
            dir: self.dir.display().to_string(),
            ..Removed::default()
        };
        if !self.dir.exists() {
            return Ok(removed);
        }
        // The link first: the program stops before its maps go.
        let link = self.link_path();
        if link.exists() {
            std::fs::remove_file(&link).map_err(io_at("removing", &link))?;
            removed.link = true;
        }
        for name in maps::ALL {
            let path = self.map_path(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(io_at("removing", &path))?;
                removed.maps.push(name.to_string());
            }
        }
        let left: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io_at("reading", &self.dir))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !left.is_empty() {
            return Err(PinError::Unexpected {
                path: self.dir.display().to_string(),
                files: left,
            });
        }
        std::fs::remove_dir(&self.dir).map_err(io_at("removing", &self.dir))?;
        // The parent too, when this was its last interface.
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(removed)
    }

    /// Put `program` under the pinned link (bpf_link_update: atomic, the old
    /// program runs until the new one replaces it), or attach it and pin the
    /// new link. A pinned link whose interface is gone (ENOLINK) is replaced
    /// by a fresh one. The link's fd is not kept: the pin holds the link.
    pub fn attach(
        &self,
        program: &mut Xdp,
        interface: &str,
        mode: crate::AttachMode,
    ) -> Result<Attached, DataplaneError> {
        let path = self.link_path();
        let link_err = |source| PinError::Link {
            path: path.display().to_string(),
            source,
        };
        if path.exists() {
            let fd: FdLink = PinnedLink::from_pin(&path).map_err(link_err)?.into();
            let old_program_id = fd.info().map_err(link_err)?.program_id();
            let link = XdpLink::try_from(fd).map_err(link_err)?;
            match program.attach_to_link(link) {
                Ok(id) => {
                    let (_, program_id) = Self::release(program, id, interface, &path)?;
                    return Ok(Attached::Replaced {
                        old_program_id,
                        program_id,
                    });
                }
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOLINK) =>
                {
                    log::warn!(
                        "the pinned link {} is defunct (its interface went away): attaching afresh",
                        path.display()
                    );
                    std::fs::remove_file(&path).map_err(io_at("removing", &path))?;
                }
                Err(source) => {
                    return Err(DataplaneError::Attach {
                        interface: interface.to_string(),
                        source,
                    });
                }
            }
        }
        let started = Instant::now();
        let id = loop {
            match program.attach(interface, mode.xdp()) {
                Ok(id) => break id,
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EBUSY)
                        && started.elapsed() < BUSY_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(DataplaneError::Attach {
                        interface: interface.to_string(),
                        source,
                    });
                }
            }
        };
        let (fd, program_id) = Self::release(program, id, interface, &path)?;
        fd.pin(&path).map_err(|e| PinError::Io {
            op: "pinning",
            path: path.display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(Attached::Fresh { program_id })
    }

    /// Take the link back from the program (so dropping the program does not
    /// touch it): the link, and the id of the program it runs.
    fn release(
        program: &mut Xdp,
        id: aya::programs::xdp::XdpLinkId,
        interface: &str,
        path: &Path,
    ) -> Result<(FdLink, u32), DataplaneError> {
        let link = program
            .take_link(id)
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_string(),
                source,
            })?;
        let fd = FdLink::try_from(link).map_err(|_| PinError::NoLink {
            interface: interface.to_string(),
        })?;
        let program_id = fd
            .info()
            .map_err(|source| PinError::Link {
                path: path.display().to_string(),
                source,
            })?
            .program_id();
        Ok((fd, program_id))
    }
}

impl Dataplane {
    /// Loaded over pins of layout `LAYOUT_UPGRADES_FROM` (5), before this
    /// program is attached: copy the IPv4 flows of their XLB_CONNS (one
    /// table for both families then) into XLB_CONNS_V4, so that the program
    /// finds them from its first packet; `finish_layout_upgrade` completes
    /// the move once it is attached. Any other layout: nothing to do.
    pub(crate) fn begin_layout_upgrade(&mut self) -> Result<(), DataplaneError> {
        let global = self.config.get(&0, 0).map_err(map_err(maps::CONFIG))?;
        if global.layout_version != LAYOUT_UPGRADES_FROM || !self.conns.has_v4_table() {
            return Ok(());
        }
        let moved = self.conns.move_v4_flows(false)?;
        log::info!(
            "pinned maps of layout {LAYOUT_UPGRADES_FROM}: {} IPv4 flows copied from {} into {} \
             before the new program is attached",
            moved.copied,
            maps::CONNS,
            maps::CONNS_V4
        );
        self.layout_upgrade = true;
        Ok(())
    }

    /// The rest of an upgrade from layout `LAYOUT_UPGRADES_FROM`, once this
    /// program is attached (the old one no longer files flows into
    /// XLB_CONNS): the IPv4 flows the old program filed since
    /// `begin_layout_upgrade` copied, then every IPv4 flow deleted from
    /// XLB_CONNS, then this layout's version written into XLB_CONFIG (last:
    /// a start that dies before it does the move again, which changes
    /// nothing twice). `attach_pinned` calls it; without an upgrade it does
    /// nothing.
    pub fn finish_layout_upgrade(&mut self) -> Result<(), DataplaneError> {
        if !self.layout_upgrade {
            return Ok(());
        }
        let moved = self.conns.move_v4_flows(true)?;
        let mut global = self.config.get(&0, 0).map_err(map_err(maps::CONFIG))?;
        global.layout_version = LAYOUT_VERSION;
        self.config
            .set(0, global, 0)
            .map_err(map_err(maps::CONFIG))?;
        self.layout_upgrade = false;
        log::info!(
            "pinned maps upgraded from layout {LAYOUT_UPGRADES_FROM} to {LAYOUT_VERSION}: {} more \
             IPv4 flows copied, {} removed from {}",
            moved.copied,
            moved.removed,
            maps::CONNS
        );
        Ok(())
    }

    /// Everything adoption compares: the host entry, every VIP entry, the
    /// table of each VIP id an entry names, and every backend entry.
    pub fn read_live(&self) -> Result<LiveMaps, DataplaneError> {
        let global = self.config.get(&0, 0).map_err(map_err(maps::CONFIG))?;
        let mut vips = Vec::new();
        for entry in self.vips.iter() {
            vips.push(entry.map_err(map_err(maps::VIPS))?);
        }
        let mut tables = BTreeMap::new();
        for (_, meta) in &vips {
            if !tables.contains_key(&meta.vip_id)
                && let Some(slots) = self.live_table(meta.vip_id)?
            {
                tables.insert(meta.vip_id, slots);
            }
        }
        let backends: Vec<KernelBackend> = self.backends.to_vec();
        Ok(LiveMaps {
            global,
            vips,
            tables,
            backends,
        })
    }

    /// Make the maps hold `desired` where they do not: host entry, backend
    /// entries (before any table names them), each table swapped in whole,
    /// VIP and echo entries, and the removal of `stray` VIP entries. Used
    /// when adoption found the maps off the revision (a daemon killed in
    /// the middle of an apply).
    pub fn reconcile(
        &mut self,
        host: &HostInterface,
        desired: &Desired,
        stray: &[VipKey],
    ) -> Result<(), DataplaneError> {
        let pending = self.clear_vip_slots(Some(desired));
        self.write_global(host, &desired.config)?;
        for vip in &desired.vips {
            for (b, &id) in vip.config.backends.iter().zip(&vip.backend_ids) {
                let entry = kernel_backend(b, vip.id);
                if self.backends.get(id as usize) != entry {
                    self.backends.set(id as usize, entry);
                }
            }
        }
        // The tables that differ, swapped in together (as an apply's), each
        // before its VIP entry.
        let mut differing = Vec::new();
        for vip in &desired.vips {
            if self
                .live_table(vip.id)?
                .is_none_or(|live| !live.iter().copied().eq(vip.slot_iter()))
            {
                differing.push((vip.id, vip.slot_iter()));
            }
        }
        self.install_slots(differing)?;
        for vip in &desired.vips {
            if self.live_vip(&vip.key)? != Some(vip.meta) {
                self.vips
                    .insert(vip.key, vip.meta, 0)
                    .map_err(map_err(maps::VIPS))?;
            }
        }
        for (key, meta) in &desired.echo {
            if self.live_vip(key)? != Some(*meta) {
                self.vips
                    .insert(key, meta, 0)
                    .map_err(map_err(maps::VIPS))?;
            }
        }
        for key in stray {
            self.vips.remove(key).map_err(map_err(maps::VIPS))?;
        }
        self.fill_vip_slots(pending);
        Ok(())
    }

    /// Map the live table of each of `desired`'s VIPs, as if we had swapped
    /// it in: the drift check then reads it from memory. And make the VIP
    /// slots hold `desired`'s VIP entries: adopted maps may come without
    /// them (pinned by an xlb before them: the map is new and empty) or with
    /// stale ones (an older xlb ran on these pins meanwhile and changed the
    /// VIP entries without them), while the VIP entries match `desired`.
    pub fn adopt_tables(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let pending = self.clear_vip_slots(Some(desired));
        self.fill_vip_slots(pending);
        let name = maps::MAGLEV_TABLES;
        for vip in &desired.vips {
            if self.installed.contains_key(&vip.id) {
                continue;
            }
            let inner = match self.tables.get(&vip.id, 0) {
                Ok(inner) => inner,
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(name)(e)),
            };
            let len = inner.info().map_err(map_err(name))?.max_entries() as usize;
            let mem = MappedArray::<u32>::new(inner.fd(), len).map_err(io_err(name))?;
            self.installed.insert(vip.id, Installed::new(inner, mem)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_live_under_xlb_and_the_interface() {
        let pins = PinDir::new(Path::new("/sys/fs/bpf"), "eth0");
        assert_eq!(pins.path(), Path::new("/sys/fs/bpf/xlb/eth0"));
        assert_eq!(
            pins.map_path(maps::CONNS),
            Path::new("/sys/fs/bpf/xlb/eth0/XLB_CONNS")
        );
        assert_eq!(pins.link_path(), Path::new("/sys/fs/bpf/xlb/eth0/link"));
    }

    #[test]
    fn only_an_explicit_path_that_is_not_bpffs_is_refused_without_mounting() {
        let dir = std::env::temp_dir();
        let e = ensure_bpffs(&dir).unwrap_err().to_string();
        assert!(e.contains("not a bpffs mount"), "{e}");
        assert!(e.contains("mount -t bpf bpf"), "{e}");
    }

    #[test]
    fn a_layout_mismatch_names_both_versions_and_the_way_out() {
        let e = PinError::LayoutMismatch {
            dir: "/sys/fs/bpf/xlb/eth0".into(),
            pinned: 2,
            ours: 3,
            interface: "eth0".into(),
        }
        .to_string();
        assert!(e.contains("version 2"), "{e}");
        assert!(e.contains("version 3"), "{e}");
        assert!(e.contains("xlb detach --interface eth0"), "{e}");
    }

    #[test]
    fn removing_a_directory_that_is_not_there_removes_nothing() {
        let pins = PinDir::new(Path::new("/nonexistent-xlb-test"), "eth9");
        let removed = pins.remove().unwrap();
        assert!(!removed.link && removed.maps.is_empty());
    }
}
