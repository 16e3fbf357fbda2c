//! The built object against lb-common: every map name is there (no
//! privileges needed), and the kernel's verifier accepts the program (root).

use lb_common::maps;

#[test]
fn object_defines_every_map_in_lb_common() {
    let object = aya_obj::Object::parse(xlb_dataplane::balancer_object())
        .expect("parse the balancer object");
    for name in maps::ALL {
        assert!(
            object.maps.contains_key(name),
            "map {name} missing from the object"
        );
    }
    assert!(
        object.programs.contains_key(maps::BALANCER_PROGRAM),
        "program {} missing",
        maps::BALANCER_PROGRAM
    );
}

#[test]
fn verifier_accepts_the_balancer() {
    tests::require_privileges!();
    xlb_dataplane::Dataplane::load().expect("load the balancer");
}

#[test]
fn aux_object_defines_every_map_and_program_in_lb_common() {
    let object = aya_obj::Object::parse(xlb_dataplane::aux_object()).expect("parse the aux object");
    for name in lb_common::aux::MAPS {
        assert!(
            object.maps.contains_key(name),
            "map {name} missing from the aux object"
        );
    }
    for name in lb_common::aux::PROGRAMS {
        assert!(
            object.programs.contains_key(name),
            "program {name} missing from the aux object"
        );
    }
}
