//! `conn_table_size` is fixed when the program loads: `Dataplane::load_with`
//! sizes the kernel's connection table, and the controller refuses an apply
//! that asks for another size, writing nothing. Loads the balancer (no
//! attach, no traffic): a privileged test (`tests::require_privileges!`).

use std::sync::Arc;

use xlb::daemon::controller::{ApplyError, Controller};
use xlb_core::change::{ApplyOptions, Candidate, Origin};
use xlb_core::revision::Kind;
use xlb_dataplane::Dataplane;

/// Sizes no other test uses, so the kernel map is told apart from the
/// connection tables of tests running at the same time (one per test here,
/// for the same reason).
const SIZE: u32 = 5003;
const LOAD_SIZE: u32 = 5011;

/// An operator's apply of `text`, unchecked (as a test of the data plane).
fn apply(controller: &mut Controller, text: &str, file: &str) -> Result<u64, ApplyError> {
    let candidate = Candidate::parse(text, file, Origin::default())?;
    let options = ApplyOptions::unchecked(Kind::Apply);
    Ok(controller.apply(candidate, options)?.revision)
}

fn config(conn_table_size: Option<u32>, weight: u32) -> String {
    let size = conn_table_size.map_or(String::new(), |n| format!("conn_table_size = {n}\n"));
    format!(
        "interface = \"xlbcts0\"\n{size}\
         [[vip]]\nname = \"web\"\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
         table_size = 1021\n\
         [[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.1\"\nmac = \"02:00:00:00:00:01\"\n\
         weight = {weight}\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"198.18.0.2\"\nmac = \"02:00:00:00:00:02\"\n"
    )
}

/// Kernel maps named XLB_CONNS or XLB_CONNS_V4 (one table per family,
/// each of `conn_table_size`) with `max_entries` entries.
fn conn_tables_of_size(max_entries: u32) -> usize {
    let names = [lb_common::maps::CONNS, lb_common::maps::CONNS_V4];
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str().is_some_and(|n| names.contains(&n)))
        .filter(|m| m.max_entries() == max_entries)
        .count()
}

#[test]
fn load_with_sizes_the_connection_table() {
    tests::require_privileges!();
    let before = conn_tables_of_size(LOAD_SIZE);
    let dp = Dataplane::load_with(LOAD_SIZE).expect("load the balancer");
    assert_eq!(dp.conn_table_size(), LOAD_SIZE);
    assert_eq!(conn_tables_of_size(LOAD_SIZE), before + 2);
    drop(dp);
    assert_eq!(
        Dataplane::load().expect("load").conn_table_size(),
        lb_common::maps::CONN_TABLE_SIZE
    );
}

#[test]
fn an_apply_that_changes_the_size_is_refused_and_writes_nothing() {
    tests::require_privileges!();
    let dp = Dataplane::load_with(SIZE).expect("load the balancer");
    let metrics = Arc::new(xlb::daemon::metrics::Metrics::new());
    let mut controller = Controller::new(dp, "xlbcts0".into(), [2, 0, 0, 0, 0, 0xaa], metrics);
    let revision =
        apply(&mut controller, &config(Some(SIZE), 1), "a.toml").expect("the size the program has");
    let table = |c: &Controller| {
        c.status()
            .expect("status")
            .vips
            .into_iter()
            .map(|v| {
                v.backends
                    .into_iter()
                    .map(|b| b.table_share_ratio)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let served = table(&controller);

    // Another size, and another weight that would change the table: refused
    // whole.
    for other in [None, Some(SIZE * 2)] {
        let err = apply(&mut controller, &config(other, 5), "b.toml")
            .expect_err("another size needs a restart");
        let wanted = other.unwrap_or(lb_common::maps::CONN_TABLE_SIZE);
        assert!(matches!(err, ApplyError::RestartOnly { .. }), "{err:?}");
        assert!(err.is_bad_input());
        assert_eq!(
            err.to_string(),
            format!(
                "b.toml: conn_table_size: {SIZE} -> {wanted} needs a restart: the pinned \
                 connection table is sized when the program loads: `xlb detach` (forgets every \
                 flow), then start the daemon"
            )
        );
        assert_eq!(table(&controller), served, "nothing applied");
    }
    // The same size with the new weight goes through.
    let next = apply(&mut controller, &config(Some(SIZE), 5), "c.toml").expect("same size");
    assert_eq!(next, revision + 1);
    assert_ne!(table(&controller), served);
}
