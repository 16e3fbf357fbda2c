//! Tests of `plan`: predicted shares are the tables' shares, each safety
//! check fires on a dangerous change and stays silent on a benign one, the
//! flows-moved figure against brute force and the real flow hash, and
//! properties over random configs.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::config::{self, Backend, BackendState, Config, MacAddr, Protocol, Safety, Vip};
use crate::maglev::{self, MaglevBackend};
use crate::state;

const M: u32 = 4093;

fn backend(i: usize, weight: u32) -> Backend {
    Backend {
        name: format!("b{i}"),
        address: IpAddr::V4(Ipv4Addr::new(10, 1, (i / 256) as u8, (i % 256) as u8)),
        mac: MacAddr([2, 0, 0, 0, (i / 256) as u8, (i % 256) as u8]),
        weight,
        capacity: f64::from(weight),
        state: BackendState::Active,
    }
}

fn vip(name: &str, table_size: u32, backends: Vec<Backend>) -> Vip {
    Vip {
        name: name.into(),
        address: "198.18.100.1".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        forwarding: Default::default(),
        hash: Default::default(),
        unhandled: Default::default(),
        announce: Default::default(),
        table_size,
        imbalance: Default::default(),
        safety: Safety::default(),
        health: Default::default(),
        backends,
    }
}

fn config(hash_seed: u32, vips: Vec<Vip>) -> Config {
    Config {
        hash_seed,
        vips: vips.into_iter().map(Into::into).collect(),
        ..Config::empty("eth0".into())
    }
}

/// One VIP "web" of `n` backends of weight 1.
fn equal(n: usize) -> Config {
    config(
        7,
        vec![vip("web", M, (0..n).map(|i| backend(i, 1)).collect())],
    )
}

/// Sets a backend's weight, its capacity following (as the config's default
/// does when `capacity` is not written).
fn set_weight(b: &mut Backend, weight: u32) {
    b.weight = weight;
    b.capacity = f64::from(weight);
}

fn backend_plan<'p>(plan: &'p Plan, vip: &str, name: &str) -> &'p BackendPlan {
    plan.vips
        .iter()
        .find(|v| v.name == vip)
        .and_then(|v| v.backends.iter().find(|b| b.name == name))
        .unwrap_or_else(|| panic!("{vip}/{name} not in the plan"))
}

fn kinds(plan: &Plan) -> Vec<LintKind> {
    plan.lints.iter().map(|l| l.kind).collect()
}

fn example() -> Config {
    config::parse(include_str!("../../../examples/xlb.toml"), "xlb.toml").unwrap()
}

// ---- no change ----

#[test]
fn identical_configs_are_unchanged_without_lints() {
    for cfg in [example(), equal(10), config(0, vec![])] {
        let p = plan(&cfg, &cfg).unwrap();
        assert!(!p.changed);
        assert!(!p.refused());
        assert!(p.lints.is_empty() && p.details.is_empty());
        assert_eq!(p.base_config_hash, p.config_hash);
        assert!(p.same_config());
        assert_eq!(p.schema_version, 2);
        assert_eq!(p.base_revision, None);
        assert_eq!(p.vips.len(), cfg.vips.len());
        for v in &p.vips {
            assert_eq!(v.change, Change::Unchanged);
            assert!(v.details.is_empty());
            assert_eq!(v.flows_moved_ratio, 0.0);
            for b in &v.backends {
                assert_eq!(b.change, Change::Unchanged);
                assert_eq!(b.share_before_ratio, b.share_after_ratio);
            }
        }
        let text = p.render_table();
        assert!(
            text.starts_with("plan: no changes; every safety check passes\n\nno changes\n"),
            "{text}"
        );
        assert!(text.ends_with(&format!("\n{}\n", render::PASSED)), "{text}");
    }
}

#[test]
fn file_order_of_backends_and_vips_does_not_matter() {
    let mut base = equal(10);
    base.vips
        .push(vip("dns", 1021, (0..4).map(|i| backend(i, 2)).collect()).into());
    let mut shuffled = base.clone();
    shuffled.vips.reverse();
    for v in shuffled.vips_mut() {
        v.backends.reverse();
        v.backends.swap(0, 2);
    }
    let p = plan(&base, &shuffled).unwrap();
    assert!(!p.changed && !p.refused(), "{}", p.render_table());
    assert!(p.vips.iter().all(|v| v.flows_moved_ratio == 0.0));
    // The config hash is of the file's content, so it differs, and an
    // apply of it bakes.
    assert_ne!(p.base_config_hash, p.config_hash);
    assert!(!p.same_config());

    // And a change plans the same whatever the order of the candidate.
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends[3].weight = 5;
    candidate.vip_mut(0).backends.push(backend(10, 1));
    let mut reordered = candidate.clone();
    reordered.vip_mut(0).backends.reverse();
    let (a, b) = (
        plan(&base, &candidate).unwrap(),
        plan(&base, &reordered).unwrap(),
    );
    assert_eq!(a.vips, b.vips);
    assert_eq!(a.lints, b.lints);
    // Backends are listed by name.
    let names: Vec<&str> = a.vips[0].backends.iter().map(|b| b.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn comments_and_spacing_are_the_same_config() {
    let text = include_str!("../../../examples/xlb.toml");
    let other = format!("# the same settings\n\n{}", text.replace(" = ", "   =   "));
    let (a, b) = (
        config::parse(text, "a.toml").unwrap(),
        config::parse(&other, "b.toml").unwrap(),
    );
    let p = plan(&a, &b).unwrap();
    assert!(p.same_config() && !p.changed);
    // One setting more is another config.
    let mut c = b.clone();
    c.vip_mut(0).backends[0].weight += 1;
    assert!(!plan(&a, &c).unwrap().same_config());
}

// ---- predicted shares ----

/// Shares asked in name order, absent names among them, are the shares a
/// search by name gives.
#[test]
fn shares_in_name_order_are_the_shares_by_search() {
    let mut cfg = equal(10);
    cfg.vip_mut(0).backends[3].state = BackendState::Draining;
    let built = flows::build(&cfg.vips[0], cfg.hash_seed).unwrap();
    let mut names: Vec<String> = (0..12).map(|i| format!("b{i}")).collect();
    names.extend(["a".to_string(), "b".to_string(), "zz".to_string()]);
    names.sort();
    let mut walk = built.shares_in_order();
    for n in &names {
        assert_eq!(walk.share(n), built.share(n), "{n}");
    }
    assert_eq!(built.share("b3"), 0.0);
    assert!(built.share("b4") > 0.0);
}

/// The predicted shares are those of the tables the daemon would build:
/// `maglev::build` over the active backends, and `state::desired`.
#[test]
fn predicted_shares_are_the_tables_shares() {
    let mut base = example();
    let mut candidate = base.clone();
    let web = candidate.vip_mut(0);
    web.backends[0].weight = 3;
    web.backends[1].state = BackendState::Draining;
    web.backends.push(backend(4, 2));
    web.table_size = 131071;
    candidate.vip_mut(1).backends[2].state = BackendState::Disabled;
    candidate.hash_seed = 9;
    base.vip_mut(2).backends[0].weight = 5;

    let p = plan(&base, &candidate).unwrap();
    for (cfg, after) in [(&base, false), (&candidate, true)] {
        let desired = state::desired(cfg, &Default::default()).unwrap();
        for dv in &desired.vips {
            let v = &dv.config;
            let table = state::vip_table(v, cfg.hash_seed).unwrap();
            assert_eq!(table, dv.table);
            let shares = table.shares();
            for (b, &desired_share) in v.backends.iter().zip(&dv.table_shares) {
                let bp = backend_plan(&p, &v.name, &b.name);
                let predicted = if after {
                    bp.share_after_ratio
                } else {
                    bp.share_before_ratio
                };
                // Equal, but for the rounding to 12 decimals of the plan.
                assert!(
                    (predicted - desired_share).abs() <= 1e-12,
                    "{}/{}: {predicted} vs {desired_share}",
                    v.name,
                    b.name
                );
                let from_build = table.index_of(&b.name).map_or(0.0, |i| shares[i as usize]);
                assert_eq!(predicted, ratio(from_build), "{}/{}", v.name, b.name);
            }
        }
    }
    assert!(p.changed);
    assert_eq!(p.details, ["hash_seed 1 -> 9"]);
}

#[test]
fn capacity_shares_follow_capacities_of_active_backends() {
    let mut cfg = equal(4);
    let backends = &mut cfg.vip_mut(0).backends;
    backends[0].capacity = 4.0;
    backends[1].capacity = 2.0;
    backends[2].capacity = 2.0;
    backends[3].state = BackendState::Draining;
    // Changed (an identical VIP lists no backends): a safety limit only.
    let mut candidate = cfg.clone();
    candidate.vip_mut(0).safety.max_flows_moved = 0.5;
    let p = plan(&cfg, &candidate).unwrap();
    let got: Vec<f64> = p.vips[0]
        .backends
        .iter()
        .map(|b| b.capacity_share_ratio)
        .collect();
    assert_eq!(got, [0.5, 0.25, 0.25, 0.0]);
}

/// A VIP identical on both sides is unchanged without being built or
/// diffed (no backends listed); the plan still counts it, and a revision
/// records only the VIPs that change.
#[test]
fn identical_vips_are_not_diffed_and_not_recorded() {
    let mut base = equal(3);
    let mut second = (*base.vips[0]).clone();
    second.name = "api".to_string();
    second.port = 8080;
    base.vips.push(second.into());
    let mut candidate = base.clone();
    candidate.vip_mut(1).backends[0].weight = 2;
    let p = plan(&base, &candidate).unwrap();
    assert_eq!(p.vips[0], VipPlan::identical(&base.vips[0].name));
    assert_eq!(p.vips[1].change, Change::Changed);
    assert_eq!(p.vips[1].backends.len(), 3);
    assert!(
        p.render_table().contains("1 VIP changed, 1 unchanged"),
        "{}",
        p.render_table()
    );
    let recorded = p.recorded().value();
    assert_eq!(recorded["unchanged_vips"], 1);
    // No field twice (the plan's own `vips` is replaced, not repeated).
    assert_eq!(p.recorded().json().matches("\"vips\":").count(), 1);
    assert_eq!(recorded["vips"].as_array().unwrap().len(), 1);
    assert_eq!(recorded["vips"][0]["name"], "api");
    assert_eq!(recorded["config_hash"], p.config_hash.as_str());
    // Another seed changes every VIP's table: nothing is identical then.
    candidate.hash_seed += 1;
    let p = plan(&base, &candidate).unwrap();
    assert!(p.vips.iter().all(|v| v.backends.len() == 3));
}

// ---- the checks, on dangerous and benign changes ----

#[test]
fn weight_1_to_10_on_one_of_10_fails_share_growth_and_capacity() {
    // Ten identical machines: capacity 1 each, whatever the weights.
    let mut base = equal(10);
    for b in &mut base.vip_mut(0).backends {
        b.capacity = 1.0;
    }
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends[3].weight = 10;
    let p = plan(&base, &candidate).unwrap();
    assert!(p.refused());
    let b3 = backend_plan(&p, "web", "b3");
    assert!((b3.share_after_ratio - 10.0 / 19.0).abs() < 0.01, "{b3:?}");
    assert!((b3.share_before_ratio - 0.1).abs() < 0.01, "{b3:?}");
    assert_eq!(b3.capacity_share_ratio, 0.1);
    assert_eq!(
        (b3.weight_before, b3.weight_after, b3.change),
        (Some(1), Some(10), Change::Changed)
    );

    let by_kind = |kind| {
        p.lints
            .iter()
            .find(|l| l.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {:#?}", p.lints))
    };
    let growth = by_kind(LintKind::ShareGrowth);
    assert_eq!(
        (growth.vip.as_str(), growth.backend.as_deref()),
        ("web", Some("b3"))
    );
    let after = format!("{:.1}%", b3.share_after_ratio * 100.0);
    let before = format!("{:.1}%", b3.share_before_ratio * 100.0);
    let times = b3.share_after_ratio / b3.share_before_ratio;
    assert_eq!(
        growth.message,
        format!("b3: predicted share {after} is {times:.2}x today's {before} (limit 1.5x)")
    );
    let capacity = by_kind(LintKind::OverCapacity);
    assert_eq!(capacity.backend.as_deref(), Some("b3"));
    assert_eq!(
        capacity.message,
        format!(
            "b3: predicted share {after} is {:.2}x its capacity share 10.0% (limit 1.5x)",
            b3.share_after_ratio / 0.1
        )
    );
    // The other backends lose share: nothing else is wrong, but the flows
    // that go to b3 are ~42%, above the 30% limit.
    assert_eq!(
        kinds(&p),
        [
            LintKind::FlowsMoved,
            LintKind::ShareGrowth,
            LintKind::OverCapacity
        ]
    );
    let vp = &p.vips[0];
    assert_eq!(vp.details, ["backend b3: weight 1 -> 10"]);
    assert!(vp.flows_moved_ratio > 0.4 && vp.flows_moved_ratio < 0.47);

    // With capacity following the weight (the default), b3 can take it: no
    // capacity lint, the growth lint stays.
    let (base, mut candidate) = (equal(10), equal(10));
    set_weight(&mut candidate.vip_mut(0).backends[3], 10);
    let p = plan(&base, &candidate).unwrap();
    assert_eq!(kinds(&p), [LintKind::FlowsMoved, LintKind::ShareGrowth]);
}

#[test]
fn disabling_3_of_4_backends_fails_capacity_removed() {
    let base = equal(4);
    let mut candidate = base.clone();
    for i in [0, 2] {
        candidate.vip_mut(0).backends[i].state = BackendState::Disabled;
    }
    candidate.vip_mut(0).backends[3].state = BackendState::Draining;
    let p = plan(&base, &candidate).unwrap();
    let lint = p
        .lints
        .iter()
        .find(|l| l.kind == LintKind::CapacityRemoved)
        .expect("capacity_removed");
    assert_eq!(lint.backend, None);
    assert_eq!(
        lint.message,
        "75.0% of the active capacity would leave at once: b0, b2, b3 (limit 50%)"
    );
    // b1 alone: 4x its share, all of it from the capacity that leaves, which
    // capacity_removed judges (not share_growth); its capacity share is now
    // 100%, so that is fine.
    assert_eq!(
        kinds(&p),
        [LintKind::CapacityRemoved, LintKind::FlowsMoved,]
    );
    assert_eq!(
        p.vips[0].details,
        [
            "backend b0: state active -> disabled",
            "backend b2: state active -> disabled",
            "backend b3: state active -> draining",
        ]
    );

    // Removing half, with capacities: b0 carries 3 of 6.
    let mut base = equal(4);
    base.vip_mut(0).backends[0].capacity = 3.0;
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends.remove(0);
    let p = plan(&base, &candidate).unwrap();
    assert!(!kinds(&p).contains(&LintKind::CapacityRemoved), "{p:#?}");
    candidate.vip_mut(0).backends[0].state = BackendState::Disabled;
    let p = plan(&base, &candidate).unwrap();
    assert!(kinds(&p).contains(&LintKind::CapacityRemoved), "{p:#?}");
}

#[test]
fn draining_one_backend_does_not_count_its_flows_as_moved() {
    // Draining 1 of 3: its third of the table moves on purpose (the
    // connection table keeps its connections), so flows_moved stays quiet.
    let base = equal(3);
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends[1].state = BackendState::Draining;
    let p = plan(&base, &candidate).unwrap();
    assert!(p.vips[0].flows_moved_ratio > 0.3, "{p:#?}");
    assert!(!kinds(&p).contains(&LintKind::FlowsMoved), "{p:#?}");
    // Disabling it instead is a move like any other.
    candidate.vip_mut(0).backends[1].state = BackendState::Disabled;
    let p = plan(&base, &candidate).unwrap();
    assert!(kinds(&p).contains(&LintKind::FlowsMoved), "{p:#?}");
    // Draining 1 of 3 while a new seed reshuffles everything: the rest counts.
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends[1].state = BackendState::Draining;
    candidate.hash_seed = 8;
    let p = plan(&base, &candidate).unwrap();
    let lint = p
        .lints
        .iter()
        .find(|l| l.kind == LintKind::FlowsMoved)
        .expect("flows_moved");
    assert!(
        lint.message.contains("not counting the 33."),
        "{}",
        lint.message
    );
}

#[test]
fn table_size_hash_seed_or_hash_mode_change_moves_most_flows() {
    let base = equal(10);
    let mut bigger = base.clone();
    bigger.vip_mut(0).table_size = 8191;
    let mut reseeded = base.clone();
    reseeded.hash_seed = 8;
    let mut by_source = base.clone();
    by_source.vip_mut(0).hash = config::HashMode::Source;
    for (candidate, cause) in [
        (
            &bigger,
            "; table_size 4093 -> 8191 gives every flow a new slot",
        ),
        (&reseeded, "; hash_seed 7 -> 8 gives every flow a new hash"),
        (
            &by_source,
            "; hash five_tuple -> source gives every flow a new hash",
        ),
    ] {
        let p = plan(&base, candidate).unwrap();
        let moved = p.vips[0].flows_moved_ratio;
        // Ten equal backends: a flow stays with probability ~10 x 0.1^2.
        assert!((moved - 0.9).abs() < 0.001, "{moved}");
        assert_eq!(kinds(&p), [LintKind::FlowsMoved]);
        let message = &p.lints[0].message;
        assert!(message.starts_with("90."), "{message}");
        assert!(
            message.ends_with(&format!(
                "of the flows would move to another backend (limit 30%){cause}"
            )),
            "{message}"
        );
    }
    let p = plan(&base, &reseeded).unwrap();
    assert_eq!(p.details, ["hash_seed 7 -> 8"]);
    assert_eq!(p.vips[0].details, ["hash_seed 7 -> 8"]);
    let p = plan(&base, &bigger).unwrap();
    assert!(p.details.is_empty());
    assert_eq!(p.vips[0].details, ["table_size 4093 -> 8191"]);
    let p = plan(&base, &by_source).unwrap();
    assert!(p.details.is_empty());
    assert_eq!(p.vips[0].details, ["hash five_tuple -> source"]);
}

#[test]
fn a_forwarding_change_moves_no_flow() {
    // The method says how frames reach the backend, not which backend.
    let base = equal(10);
    let mut gue = base.clone();
    gue.vip_mut(0).forwarding = config::Forwarding::Gue;
    let p = plan(&base, &gue).unwrap();
    assert!(p.changed && !p.refused());
    assert_eq!(p.vips[0].change, Change::Changed);
    assert_eq!(p.vips[0].details, ["forwarding dsr -> gue"]);
    assert_eq!(p.vips[0].flows_moved_ratio, 0.0);
    // A new VIP's line names what is not the default.
    let mut api = vip("api", 1021, vec![backend(0, 1)]);
    api.forwarding = config::Forwarding::Gue;
    api.hash = config::HashMode::Source;
    gue.vips.push(api.into());
    let p = plan(&base, &gue).unwrap();
    assert_eq!(
        p.vips[1].details,
        [
            "VIP added: 198.18.100.1:80/tcp, forwarding gue, hash source, table_size 1021, \
             1 backend (1 active)"
        ]
    );
}

#[test]
fn adding_one_backend_to_10_is_benign() {
    let base = equal(10);
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends.push(backend(10, 1));
    let p = plan(&base, &candidate).unwrap();
    assert!(p.changed);
    assert!(p.lints.is_empty(), "{:#?}", p.lints);
    let moved = p.vips[0].flows_moved_ratio;
    assert!((1.0 / 11.0..1.0 / 11.0 + 0.02).contains(&moved), "{moved}");
    let b10 = backend_plan(&p, "web", "b10");
    assert_eq!(b10.change, Change::Added);
    assert_eq!((b10.weight_before, b10.weight_after), (None, Some(1)));
    assert_eq!(
        (b10.state_before.as_deref(), b10.state_after.as_deref()),
        (None, Some("active"))
    );
    assert_eq!(b10.share_before_ratio, 0.0);
    assert!((b10.share_after_ratio - 1.0 / 11.0).abs() < 0.002);
    assert_eq!(p.vips[0].details, ["backend b10 added (weight 1, active)"]);
}

#[test]
fn weight_2_to_3_on_one_of_10_is_benign() {
    // 2/11 = 18.2% -> 3/12 = 25%: 1.375x, under 1.5x; capacity follows the
    // weight; about 7% of the flows move.
    let mut base = equal(10);
    set_weight(&mut base.vip_mut(0).backends[4], 2);
    let mut candidate = base.clone();
    set_weight(&mut candidate.vip_mut(0).backends[4], 3);
    let p = plan(&base, &candidate).unwrap();
    assert!(p.lints.is_empty(), "{:#?}", p.lints);
    let b4 = backend_plan(&p, "web", "b4");
    let growth = b4.share_after_ratio / b4.share_before_ratio;
    assert!((growth - 1.375).abs() < 0.02, "{growth}");
    assert!(p.vips[0].flows_moved_ratio < 0.1);
}

#[test]
fn candidate_safety_limits_apply() {
    let base = equal(10);
    let mut candidate = base.clone();
    set_weight(&mut candidate.vip_mut(0).backends[3], 10);
    candidate.vip_mut(0).safety = Safety {
        max_share_growth: 10.0,
        max_flows_moved: 0.5,
        ..Safety::default()
    };
    let p = plan(&base, &candidate).unwrap();
    assert!(!p.refused(), "{:#?}", p.lints);
    assert_eq!(
        p.vips[0].details,
        [
            "safety.max_share_growth 1.5 -> 10",
            "safety.max_flows_moved 0.3 -> 0.5",
            "backend b3: weight 1 -> 10",
        ]
    );
}

/// A backend already over its capacity whose share does not grow is not
/// the change's doing: relieving it is not refused.
#[test]
fn capacity_check_only_when_the_share_grows() {
    let mut base = equal(4);
    set_weight(&mut base.vip_mut(0).backends[0], 4);
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends.push(backend(4, 1));
    // b0: 4/7 of the flows on 4/7 of the capacity, then 4/8 on 4/8.
    assert!(plan(&base, &candidate).unwrap().lints.is_empty());
    // Declared capacity 1, like the others: 4/7 of the flows on 1/4 of the
    // capacity, then 4/8 on 1/5; the addition relieves b0, it is not refused.
    base.vip_mut(0).backends[0].capacity = 1.0;
    candidate.vip_mut(0).backends[0].capacity = 1.0;
    let p = plan(&base, &candidate).unwrap();
    assert!(p.lints.is_empty(), "{:#?}", p.lints);
    // A weight increase on it is: 5/8 on 1/4.
    let mut candidate = base.clone();
    candidate.vip_mut(0).backends[0].weight = 5;
    let p = plan(&base, &candidate).unwrap();
    assert_eq!(kinds(&p), [LintKind::OverCapacity], "{:#?}", p.lints);
    let message = &p.lints[0].message;
    assert!(message.starts_with("b0: predicted share 62."), "{message}");
    assert!(
        message.ends_with("its capacity share 25.0% (limit 1.5x)"),
        "{message}"
    );
}

#[test]
fn new_backend_is_checked_against_its_capacity_not_for_growth() {
    let base = equal(4);
    let mut candidate = base.clone();
    let mut big = backend(4, 8);
    big.capacity = 1.0;
    candidate.vip_mut(0).backends.push(big);
    let p = plan(&base, &candidate).unwrap();
    // b4: 8/12 of the flows on 1/5 of the capacity; the old ones shrink.
    assert!(
        kinds(&p).contains(&LintKind::OverCapacity),
        "{:#?}",
        p.lints
    );
    assert!(
        !kinds(&p).contains(&LintKind::ShareGrowth),
        "{:#?}",
        p.lints
    );
    assert_eq!(
        p.vips[0].details,
        ["backend b4 added (weight 8, capacity 1, active)"]
    );
}

#[test]
fn removing_one_backend_of_n_moves_about_1_over_n() {
    for n in [3usize, 5, 10, 20] {
        let base = equal(n);
        for gone in [0, n / 2, n - 1] {
            let mut candidate = base.clone();
            candidate.vip_mut(0).backends.remove(gone);
            let p = plan(&base, &candidate).unwrap();
            let moved = p.vips[0].flows_moved_ratio;
            let own = backend_plan(&p, "web", &format!("b{gone}")).share_before_ratio;
            // Its own flows, and Maglev's small extra disruption.
            assert!(moved >= own, "n = {n}: {moved} < {own}");
            assert!(
                (moved - 1.0 / n as f64).abs() < 0.02,
                "n = {n}, removed b{gone}: {moved}"
            );
            let b = backend_plan(&p, "web", &format!("b{gone}"));
            assert_eq!(b.change, Change::Removed);
            assert_eq!((b.share_after_ratio, b.capacity_share_ratio), (0.0, 0.0));
        }
    }
}

#[test]
fn added_and_removed_vips_are_listed_not_checked() {
    let base = example();
    let mut candidate = base.clone();
    let dns = candidate.vips.remove(1);
    let mut big = vip("api", 1021, vec![backend(0, 1), backend(1, 9)]);
    big.backends[1].capacity = 0.1;
    candidate.vips.insert(0, big.into());
    let p = plan(&base, &candidate).unwrap();
    assert!(p.lints.is_empty(), "{:#?}", p.lints);
    let order: Vec<(&str, Change)> = p.vips.iter().map(|v| (v.name.as_str(), v.change)).collect();
    assert_eq!(
        order,
        [
            ("api", Change::Added),
            ("web", Change::Unchanged),
            ("web6", Change::Unchanged),
            ("dns", Change::Removed),
        ]
    );
    assert_eq!(p.vips[0].flows_moved_ratio, 1.0);
    assert_eq!(p.vips[3].flows_moved_ratio, 1.0);
    assert_eq!(
        p.vips[0].details,
        ["VIP added: 198.18.100.1:80/tcp, table_size 1021, 2 backends (2 active)"]
    );
    assert_eq!(
        p.vips[3].details,
        [format!(
            "VIP removed: {}, 3 backends (3 active)",
            dns.endpoint()
        )]
    );
    assert!(p.vips[0].backends.iter().all(|b| b.change == Change::Added));
    assert!(
        p.vips[3]
            .backends
            .iter()
            .all(|b| b.change == Change::Removed
                && b.share_before_ratio > 0.0
                && b.share_after_ratio == 0.0)
    );
    assert!(p.changed);
    assert_eq!(
        p.summary(),
        [
            "plan: 1 VIP added, 1 removed, 2 unchanged; every safety check passes",
            "api: added (2 backends)",
            "dns: removed (3 backends)",
        ]
    );
    let text = p.render_table();
    for line in [
        "\n+ vip api: added\n",
        "\n- vip dns: removed\n",
        "\n  + b1 ",
        "\n  - b3 ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

#[test]
fn a_vip_without_active_backends() {
    // Nothing served today: bringing backends up moves no flow.
    let mut base = equal(3);
    for b in &mut base.vip_mut(0).backends {
        b.state = BackendState::Disabled;
    }
    let candidate = equal(3);
    let p = plan(&base, &candidate).unwrap();
    assert_eq!(p.vips[0].flows_moved_ratio, 1.0);
    assert!(p.lints.is_empty(), "{:#?}", p.lints);
    // Taking them all out is refused.
    let p = plan(&candidate, &base).unwrap();
    assert_eq!(p.vips[0].flows_moved_ratio, 1.0);
    assert_eq!(
        kinds(&p),
        [LintKind::CapacityRemoved, LintKind::FlowsMoved],
        "{:#?}",
        p.lints
    );
    // Neither side: nothing moves.
    let p = plan(&base, &base).unwrap();
    assert_eq!(p.vips[0].flows_moved_ratio, 0.0);
}

#[test]
fn every_difference_has_a_line() {
    let base = example();
    let mut c = base.clone();
    c.interface = "eth1".into();
    c.metrics_address = "127.0.0.1:9999".parse().unwrap();
    let web = c.vip_mut(0);
    web.address = "198.18.100.9".parse().unwrap();
    web.port = 8081;
    web.protocol = Protocol::Udp;
    web.imbalance.max_ratio = 2.0;
    web.imbalance.hold_seconds = 30.0;
    web.backends[0].address = "198.18.0.99".parse().unwrap();
    web.backends[0].mac = MacAddr([2, 0, 0, 0, 0, 0x99]);
    web.backends[1].capacity = 2.5;
    web.backends.remove(2);
    web.forwarding = config::Forwarding::Ipip;
    web.hash = config::HashMode::NoPorts;
    c.conn_table_size = 1 << 20;
    c.icmp_echo = config::IcmpEcho::Pass;
    c.tunnel.source_v4 = Some(config::Ipv4Prefix {
        addr: "198.18.200.0".parse().unwrap(),
        len: 24,
    });
    c.tunnel.gue_port = 6081;
    c.tunnel.gateway_mac = Some(MacAddr([2, 0, 0, 0, 0, 1]));
    let p = plan(&base, &c).unwrap();
    assert_eq!(
        p.details,
        [
            "interface eth0 -> eth1",
            "metrics_address 127.0.0.1:9470 -> 127.0.0.1:9999",
            "conn_table_size 262144 -> 1048576",
            "icmp_echo reply -> pass",
            "tunnel.source_v4 none -> 198.18.200.0/24",
            "tunnel.gue_port 6080 -> 6081",
            "tunnel.gateway_mac none -> 02:00:00:00:00:01",
        ]
    );
    assert_eq!(
        p.vips[0].details,
        [
            "address 198.18.100.1 -> 198.18.100.9",
            "port 8080 -> 8081",
            "protocol tcp -> udp",
            "forwarding dsr -> ipip",
            "hash five_tuple -> no_ports",
            "imbalance.max_ratio 1.5 -> 2",
            "imbalance.hold 10s -> 30s",
            "backend b1: address 198.18.0.11 -> 198.18.0.99",
            "backend b1: mac 02:00:00:00:00:11 -> 02:00:00:00:00:99",
            "backend b2: capacity 1 -> 2.5",
            "backend b3 removed",
        ]
    );
    let changes: Vec<Change> = p.vips[0].backends.iter().map(|b| b.change).collect();
    assert_eq!(changes, [Change::Changed, Change::Changed, Change::Removed]);
    // Only the interface: changed, every VIP unchanged.
    let mut c = base.clone();
    c.interface = "eth1".into();
    let p = plan(&base, &c).unwrap();
    assert!(p.changed && !p.refused() && p.needs_restart());
    assert!(p.vips.iter().all(|v| v.change == Change::Unchanged));
    assert_eq!(
        p.render_table(),
        "plan: 3 VIPs unchanged; 1 config-wide change; needs a restart (an apply refuses it); \
         every safety check passes\n\n\
         interface eth0 -> eth1   (restart-only)\n\n  vip web: unchanged\n  vip dns: unchanged\n\
         \x20 vip web6: unchanged\n\nneeds a restart: an apply refuses this change (exit 2)\n  \
         interface: eth0 -> eth1 needs a restart: the daemon is attached to its interface; \
         start a daemon for the new one (and `xlb detach` the old one if it should stop \
         forwarding)\nevery safety check passes (max_share_growth, max_capacity_ratio, \
         max_flows_moved, max_capacity_removed)\n"
    );
}

#[test]
fn a_config_file_through_the_plan() {
    let base = example();
    let text = include_str!("../../../examples/xlb.toml").replacen(
        "weight = 2",
        "weight = 20\n  capacity = 2",
        1,
    );
    let candidate = config::parse(&text, "new.toml").unwrap();
    let p = plan(&base, &candidate).unwrap();
    assert!(p.refused());
    assert_eq!(p.vips[0].details, ["backend b3: weight 2 -> 20"]);
    // b3 goes from 1/2 to 20/22 of the flows, on 2/4 of the capacity.
    assert_eq!(
        kinds(&p),
        [
            LintKind::FlowsMoved,
            LintKind::ShareGrowth,
            LintKind::OverCapacity
        ],
        "{:#?}",
        p.lints
    );
    assert!(p.lints[1].message.starts_with("b3: predicted share 90."));
    assert!(p.lints[2].message.contains("its capacity share 50.0%"));
    // The other VIPs are untouched.
    assert_eq!(p.vips[1].change, Change::Unchanged);
    assert_eq!(p.vips[2].change, Change::Unchanged);
}

// ---- the flows-moved method ----

/// With different prime sizes, the formula equals counting every hash over
/// one full period M1 x M2.
#[test]
fn moved_fraction_across_sizes_equals_brute_force() {
    let names = ["a", "b", "c", "d"];
    let weights = [1u32, 2, 3, 1];
    let build = |m: u32, n: usize| {
        let inputs: Vec<MaglevBackend<'_>> = names[..n]
            .iter()
            .zip(weights)
            .map(|(&name, weight)| MaglevBackend { name, weight })
            .collect();
        Built::from_table(
            maglev::build(&inputs, m, 3).unwrap(),
            3,
            config::HashMode::FiveTuple,
        )
    };
    for (m1, m2, n1, n2) in [(101, 103, 4, 4), (101, 107, 4, 3), (109, 101, 2, 4)] {
        let (before, after) = (build(m1, n1), build(m2, n2));
        let moved = (0..m1 as usize * m2 as usize)
            .filter(|&h| before.table.owner(h % m1 as usize) != after.table.owner(h % m2 as usize))
            .count();
        let exact = moved as f64 / (f64::from(m1) * f64::from(m2));
        let predicted = flows::moved_ratio(&before, &after);
        assert!((predicted - exact).abs() < 1e-12, "{predicted} vs {exact}");
    }
}

/// Against the real flow hash: push random flows through both configs as
/// the XDP program would (the VIP's hash mode, then the hash), and count
/// those that change backend.
#[test]
fn moved_fraction_matches_real_flows() {
    use lb_common::hash::{FlowWords, flow_hash, hash_input};
    let base = equal(6);
    let mut bigger = base.clone();
    bigger.vip_mut(0).table_size = 8191;
    let mut reseeded = base.clone();
    reseeded.hash_seed = 12345;
    let mut weighted = base.clone();
    weighted.vip_mut(0).backends[1].weight = 4;
    weighted.vip_mut(0).backends.remove(5);
    let mut by_source = base.clone();
    by_source.vip_mut(0).hash = config::HashMode::Source;
    let mut no_ports = weighted.clone();
    no_ports.vip_mut(0).hash = config::HashMode::NoPorts;

    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u32
    };
    let flows: Vec<FlowWords> = (0..20_000)
        .map(|_| FlowWords {
            src: [next(), 0, 0, 0],
            dst: [0x0a64_12c6, 0, 0, 0],
            ports: next(),
            proto: 6,
        })
        .collect();
    let slot = |config: &Config, f: &FlowWords| {
        let vip = &config.vips[0];
        (flow_hash(&hash_input(f, vip.hash.code()), config.hash_seed) % vip.table_size) as usize
    };
    for candidate in [&bigger, &reseeded, &weighted, &by_source, &no_ports] {
        let before = flows::build(&base.vips[0], base.hash_seed).unwrap();
        let after = flows::build(&candidate.vips[0], candidate.hash_seed).unwrap();
        let moved = flows
            .iter()
            .filter(|f| before.table.owner(slot(&base, f)) != after.table.owner(slot(candidate, f)))
            .count() as f64
            / flows.len() as f64;
        let predicted = plan(&base, candidate).unwrap().vips[0].flows_moved_ratio;
        // 20,000 flows: a standard deviation below 0.4%.
        assert!(
            (moved - predicted).abs() < 0.015,
            "measured {moved}, predicted {predicted}"
        );
    }
}

// ---- JSON and text ----

#[test]
fn plan_round_trips_through_json() {
    let base = equal(10);
    let mut candidate = base.clone();
    set_weight(&mut candidate.vip_mut(0).backends[3], 10);
    candidate.vip_mut(0).backends.push(backend(10, 1));
    candidate
        .vips
        .push(vip("dns", 1021, vec![backend(0, 1)]).into());
    let mut p = plan(&base, &candidate).unwrap();
    p.base_revision = Some(42);
    let json = serde_json::to_string(&p).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);

    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["base_revision"], 42);
    assert_eq!(v["refused"], true);
    assert_eq!(v["changed"], true);
    assert_eq!(v["vips"][0]["change"], "changed");
    assert_eq!(v["vips"][1]["change"], "added");
    assert_eq!(v["vips"][0]["backends"][0]["state_after"], "active");
    assert!(v["vips"][0]["backends"][0]["share_after_ratio"].is_f64());
    assert!(v["vips"][0]["flows_moved_ratio"].is_f64());
    assert_eq!(v["lints"][0]["kind"], "max_flows_moved");
    assert!(v["lints"][0]["value"].as_f64().unwrap() > v["lints"][0]["limit"].as_f64().unwrap());
    assert_eq!(v["lints"][0]["backend"], serde_json::Value::Null);
    assert_eq!(v["lints"][1]["kind"], "max_share_growth");
    assert_eq!(v["lints"][1]["limit"], 1.5);
    assert_eq!(v["lints"][1]["backend"], "b3");
    assert_eq!(v["config_hash"].as_str().unwrap().len(), 16);
}

#[test]
fn config_hash_is_of_the_json_form_vip_by_vip() {
    let a = example();
    assert_eq!(config_hash(&a), config_hash(&a.clone()));
    // The head's JSON (the config without VIPs), then each VIP's xxh64.
    let mut head = a.clone();
    head.vips.clear();
    let mut bytes = serde_json::to_vec(&head).unwrap();
    for v in &a.vips {
        let h = xxh64(&serde_json::to_vec(v).unwrap(), 0);
        assert_eq!(h, vip_hash(v));
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    assert_eq!(config_hash(&a), format!("{:016x}", xxh64(&bytes, 0)));
    // The order of the VIPs is part of it.
    let mut swapped = a.clone();
    swapped.vips.reverse();
    assert_ne!(config_hash(&a), config_hash(&swapped));
    let mut b = a.clone();
    b.vip_mut(0).backends[0].capacity = 1.5;
    assert_ne!(config_hash(&a), config_hash(&b));
    assert!(config_hash(&a).chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn render_shows_changes_shares_and_refusals() {
    let mut base = equal(10);
    base.vips.push(vip("dns", 1021, vec![backend(0, 1)]).into());
    let mut candidate = base.clone();
    set_weight(&mut candidate.vip_mut(0).backends[3], 10);
    candidate.vip_mut(0).backends[5].state = BackendState::Draining;
    candidate.vip_mut(0).backends.push(backend(10, 1));
    let p = plan(&base, &candidate).unwrap();
    let text = p.render_table();
    let web = &p.vips[0];
    let all: Vec<&str> = text.lines().collect();
    // The summary first: the whole plan, then each changed VIP.
    let refused_by = "refused by max_flows_moved, max_share_growth";
    assert_eq!(
        all[..3],
        [
            format!("plan: 1 VIP changed, 1 unchanged; {refused_by}").as_str(),
            &format!("  web: 1 backend added, 2 changed; {refused_by}"),
            "",
        ],
        "{text}"
    );
    assert_eq!(p.summary().len(), 2);
    let lines = &all[3..];
    assert_eq!(
        lines[0],
        format!(
            "~ vip web: changed, {:.1}% of flows move to another backend",
            web.flows_moved_ratio * 100.0
        )
    );
    assert_eq!(lines[1], "  backend b10 added (weight 1, active)");
    assert_eq!(lines[2], "  backend b3: weight 1 -> 10");
    assert_eq!(lines[3], "  backend b5: state active -> draining");
    assert_eq!(
        lines[4],
        "  note: b5 leaves: every staying backend's share grows 1.1111x; judged by \
         max_capacity_removed (10.0% of the capacity leaves, limit 50%) and max_capacity_ratio \
         (limit 1.5x), not max_share_growth"
    );
    assert!(
        lines[5].starts_with("  BACKEND   CHANGE      WEIGHT    STATE")
            && lines[5].contains("SHARE            CAPACITY SHARE")
            && lines[5].ends_with("ESTABLISHED"),
        "{text}"
    );
    let b3 = lines.iter().find(|l| l.starts_with("  ~ b3 ")).unwrap();
    assert!(b3.contains("changed     1 -> 10"), "{b3}");
    let b3p = backend_plan(&p, "web", "b3");
    assert!(
        b3.contains(&format!(
            "{:.1}% -> {:.1}%",
            b3p.share_before_ratio * 100.0,
            b3p.share_after_ratio * 100.0
        )),
        "{b3}"
    );
    let b10 = lines.iter().find(|l| l.starts_with("  + b10 ")).unwrap();
    assert!(b10.contains("added       - -> 1    - -> active"), "{b10}");
    let b5 = lines.iter().find(|l| l.starts_with("  ~ b5 ")).unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("    b0 ")),
        "unchanged backends are unmarked: {text}"
    );
    assert!(b5.contains("active -> draining"), "{b5}");
    assert!(text.contains("\n  vip dns: unchanged\n"), "{text}");
    assert!(
        text.contains(&format!(
            "\nrefused: {} safety checks failed\n",
            p.lints.len()
        )),
        "{text}"
    );
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("refused:"))
        .skip(1)
        .collect();
    assert_eq!(tail.len(), p.lints.len() + 1, "{text}");
    assert!(
        tail[0].starts_with("  VIP   CHECK") && tail[0].ends_with("FINDING"),
        "{text}"
    );
    for (line, lint) in tail[1..].iter().zip(&p.lints) {
        assert!(
            line.starts_with(&format!("  web   {} ", lint.kind.key())),
            "{line}"
        );
        assert!(line.ends_with(&format!(" {}", lint.message)), "{line}");
    }
    assert!(!text.contains("every safety check passes"));
}

// ---- properties ----

/// One backend of a random config: weight, state, and what the candidate
/// does with it.
#[derive(Clone, Debug)]
struct Gen {
    weight: u32,
    state: BackendState,
    new_weight: Option<u32>,
    new_state: Option<BackendState>,
    removed: bool,
}

fn gen_backend() -> impl Strategy<Value = Gen> {
    let state = prop_oneof![
        6 => Just(BackendState::Active),
        1 => Just(BackendState::Draining),
        1 => Just(BackendState::Disabled),
    ];
    (
        1u32..=10,
        state.clone(),
        prop::option::weighted(0.3, 1u32..=10),
        prop::option::weighted(0.2, state),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(weight, state, new_weight, new_state, removed)| Gen {
            weight,
            state,
            new_weight,
            new_state,
            removed,
        })
}

/// Whether every flow goes to the same backend under both tables.
fn same_assignment(before: &Built, after: &Built) -> bool {
    let (t1, t2) = (&before.table, &after.table);
    if t1.slots.is_empty() || t2.slots.is_empty() {
        return t1.slots.is_empty() && t2.slots.is_empty();
    }
    if t1.slots.len() == t2.slots.len() && before.seed == after.seed && before.hash == after.hash {
        return (0..t1.slots.len()).all(|i| t1.owner(i) == t2.owner(i));
    }
    // Independent slots: only a single, same owner keeps every flow.
    let owners = |t: &MaglevTable| {
        let counts = t.slot_counts();
        t.names
            .iter()
            .zip(counts)
            .filter(|&(_, c)| c > 0)
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let (o1, o2) = (owners(t1), owners(t2));
    o1.len() == 1 && o1 == o2
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn shares_sum_to_one_and_flows_moved_is_a_fraction(
        gens in prop::collection::vec(gen_backend(), 2..=12),
        added in prop::collection::vec(1u32..=10, 0..=2),
        sizes in (prop::sample::select(vec![1021u32, 4093]), prop::sample::select(vec![1021u32, 4093])),
        seeds in (0u32..=1, 0u32..=1),
    ) {
        let base_backends: Vec<Backend> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| Backend { state: g.state, ..backend(i, g.weight) })
            .collect();
        let mut candidate_backends: Vec<Backend> = gens
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.removed)
            .map(|(i, g)| {
                let weight = g.new_weight.unwrap_or(g.weight);
                Backend { state: g.new_state.unwrap_or(g.state), ..backend(i, weight) }
            })
            .collect();
        candidate_backends.extend(
            added.iter().enumerate().map(|(k, &w)| backend(100 + k, w)),
        );
        let base = config(seeds.0, vec![vip("web", sizes.0, base_backends)]);
        let candidate = config(seeds.1, vec![vip("web", sizes.1, candidate_backends)]);
        let p = plan(&base, &candidate).unwrap();
        let v = &p.vips[0];
        if base == candidate {
            // Identical: unchanged, not diffed (no backends listed).
            prop_assert_eq!(v, &VipPlan::identical("web"));
            return Ok(());
        }

        for (after, cfg) in [(false, &base), (true, &candidate)] {
            let active = cfg.vips[0].table_backends().count();
            let (mut sum, mut capacity) = (0.0, 0.0);
            for b in &v.backends {
                let (state, share) = if after {
                    (&b.state_after, b.share_after_ratio)
                } else {
                    (&b.state_before, b.share_before_ratio)
                };
                if state.as_deref() == Some("active") {
                    sum += share;
                } else {
                    prop_assert_eq!(share, 0.0, "{} is not active", b.name);
                }
                if after {
                    capacity += b.capacity_share_ratio;
                }
            }
            let want = if active > 0 { 1.0 } else { 0.0 };
            prop_assert!((sum - want).abs() < 1e-9, "shares sum to {}", sum);
            if after {
                prop_assert!((capacity - want).abs() < 1e-9, "capacity shares sum to {}", capacity);
            }
        }

        let moved = v.flows_moved_ratio;
        prop_assert!((0.0..=1.0).contains(&moved), "{}", moved);
        let before = flows::build(&base.vips[0], base.hash_seed).unwrap();
        let after = flows::build(&candidate.vips[0], candidate.hash_seed).unwrap();
        prop_assert_eq!(moved == 0.0, same_assignment(&before, &after), "moved {}", moved);
        // An unchanged plan moves nothing and refuses nothing.
        if !p.changed {
            prop_assert_eq!(moved, 0.0);
            prop_assert!(p.lints.is_empty());
        }
        // Plan against itself: nothing.
        let same = plan(&candidate, &candidate).unwrap();
        prop_assert!(!same.changed && same.lints.is_empty());
    }
}

/// Removing a backend and draining it move the same new flows, but the
/// plan tells them apart: a drain keeps the backend's established
/// connections, a removal (or a new address) cuts them.
#[test]
fn removal_cuts_established_connections_and_a_drain_keeps_them() {
    let base = equal(4);
    let mut drained = base.clone();
    drained.vip_mut(0).backends[3].state = BackendState::Draining;
    let mut removed = base.clone();
    removed.vip_mut(0).backends.remove(3);
    let mut moved = base.clone();
    moved.vip_mut(0).backends[2].address = "198.18.9.9".parse().unwrap();
    let d = plan(&base, &drained).unwrap();
    let r = plan(&base, &removed).unwrap();
    assert_eq!(d.vips[0].flows_moved_ratio, r.vips[0].flows_moved_ratio);
    assert_eq!(backend_plan(&d, "web", "b3").established, Established::Kept);
    assert_eq!(
        backend_plan(&r, "web", "b3").established,
        Established::CutRemoved
    );
    let m = plan(&base, &moved).unwrap();
    assert_eq!(
        backend_plan(&m, "web", "b2").established,
        Established::CutAddressChanged
    );
    assert_eq!(backend_plan(&m, "web", "b0").established, Established::Kept);
    assert!(!d.render_table().contains("are cut"));
    assert!(
        r.render_table().contains(
            "established connections of b3 are cut (reset); draining a backend keeps them"
        ),
        "{}",
        r.render_table()
    );
}

/// Issue 19, item 4: draining one of three equal backends is a routine
/// change, and its verdict does not depend on the table size (it flipped
/// with rounding when share_growth judged the others' 1.5x).
#[test]
fn draining_one_of_three_passes_at_every_table_size() {
    for table_size in [101, 1021, 4093, 65537] {
        let mut base = equal(3);
        base.vip_mut(0).table_size = table_size;
        let mut drained = base.clone();
        drained.vip_mut(0).backends[2].state = BackendState::Draining;
        let p = plan(&base, &drained).unwrap();
        assert!(p.lints.is_empty(), "table_size {table_size}: {:?}", p.lints);
        assert!(
            p.vips[0].notes[0].starts_with("b2 leaves: every staying backend's share grows 1.5x")
        );
        // Two of three leave: two thirds of the capacity, refused by
        // capacity_removed, still not by share_growth.
        drained.vip_mut(0).backends[1].state = BackendState::Disabled;
        let kinds: Vec<LintKind> = plan(&base, &drained)
            .unwrap()
            .lints
            .iter()
            .map(|l| l.kind)
            .collect();
        assert!(
            kinds.contains(&LintKind::CapacityRemoved) && !kinds.contains(&LintKind::ShareGrowth),
            "{kinds:?}"
        );
    }
}

// ---- tables taken from the applied state ----

/// Planning over the applied state's tables (the daemon's way: only changed
/// VIPs' tables built) gives the plan that building every table gives.
#[test]
fn planning_over_the_applied_tables_is_planning_from_scratch() {
    let two = |seed: u32, w: u32, size: u32| {
        let mut a = vip("web", M, (0..4).map(|i| backend(i, 1)).collect());
        set_weight(&mut a.backends[0], w);
        let mut b = vip("api", size, (0..3).map(|i| backend(i, 1)).collect());
        b.address = "198.18.100.2".parse().unwrap();
        config(seed, vec![a, b])
    };
    let base = two(7, 1, 4091);
    let applied = state::desired(&base, &Default::default()).unwrap();
    for candidate in [
        two(7, 1, 4091),
        two(7, 3, 4091),
        two(7, 1, 4079),
        two(8, 1, 4091),
        config(7, vec![vip("web", M, vec![backend(0, 1)])]),
    ] {
        assert_eq!(
            plan_over(&base, Some(&applied), &candidate).unwrap(),
            plan(&base, &candidate).unwrap()
        );
        assert_eq!(
            plan_over(&base, None, &candidate).unwrap(),
            plan(&base, &candidate).unwrap()
        );
        // The applied state's own config as the base, as the daemon plans:
        // identical VIPs' hashes are taken from it, and are the same.
        assert_eq!(
            plan_over(&applied.config, Some(&applied), &candidate).unwrap(),
            plan(&base, &candidate).unwrap()
        );
    }
}
