//! moby's graphtest conformance suite (spec §4.3, §4.2 item 26) against overlay2 on kernel
//! overlayfs. Unlike moby, changes are not skipped: overlay2 computes them natively.

use graphdriver::ProtoDriver;
use graphdriver::graphtest::{self, Outcome, TempHome};
use graphdriver::overlay2::{MountApi, Overlay2, Overlay2Options};

use overlay2_util::can_run;
use testkit::overlay2 as overlay2_util;

fn overlay2(tag: &str, options: Overlay2Options) -> Option<(TempHome, Overlay2)> {
    if !can_run() {
        return None;
    }
    let home = TempHome::new(tag).unwrap();
    let driver = Overlay2::new(home.path().join("overlay2"), options).unwrap();
    Some((home, driver))
}

fn run(name: &str, driver: &Overlay2, outcome: Outcome) {
    match outcome {
        // Without xfs pquota, a quota is refused cleanly: what that case checks here.
        Outcome::Skipped(why) if name == "set quota" => eprintln!("{name}: refused: {why}"),
        Outcome::Skipped(why) => {
            let _ = testkit::gate::lacking("a driver feature", format!("{name}: {why}"));
        }
        Outcome::Passed => {}
    }
    driver.cleanup().unwrap();
}

#[test]
fn overlay_setup() {
    let Some((home, d)) = overlay2("ovl-setup", Overlay2Options::default()) else {
        return;
    };
    assert!(home.path().join("overlay2/l").is_dir());
    assert_eq!(d.name(), "overlay2");
}

#[test]
fn overlay_create_empty() {
    let Some((_h, d)) = overlay2("ovl-empty", Overlay2Options::default()) else {
        return;
    };
    run("create empty", &d, graphtest::driver_test_create_empty(&d));
}

#[test]
fn overlay_create_base() {
    let Some((_h, d)) = overlay2("ovl-base", Overlay2Options::default()) else {
        return;
    };
    run("create base", &d, graphtest::driver_test_create_base(&d));
}

#[test]
fn overlay_create_snap() {
    let Some((_h, d)) = overlay2("ovl-snap", Overlay2Options::default()) else {
        return;
    };
    run("create snap", &d, graphtest::driver_test_create_snap(&d));
}

#[test]
fn overlay_128_layer_read() {
    let Some((_h, d)) = overlay2("ovl-deep", Overlay2Options::default()) else {
        return;
    };
    run(
        "deep layer read",
        &d,
        graphtest::driver_test_deep_layer_read(&d, 128),
    );
}

#[test]
fn overlay_128_layer_read_with_mount2() {
    let options = Overlay2Options {
        mount_api: MountApi::Legacy,
        ..Overlay2Options::default()
    };
    let Some((_h, d)) = overlay2("ovl-deep-legacy", options) else {
        return;
    };
    run(
        "deep layer read (mount(2))",
        &d,
        graphtest::driver_test_deep_layer_read(&d, 128),
    );
}

#[test]
fn overlay_diff_apply_10_files() {
    let Some((_h, d)) = overlay2("ovl-diffapply", Overlay2Options::default()) else {
        return;
    };
    assert!(
        d.uses_native_diff(),
        "native diff is expected on this kernel"
    );
    run("diff apply", &d, graphtest::driver_test_diff_apply(&d, 10));
}

#[test]
fn overlay_diff_apply_10_files_naive() {
    let options = Overlay2Options {
        force_naive_diff: true,
        ..Overlay2Options::default()
    };
    let Some((_h, d)) = overlay2("ovl-diffapply-naive", options) else {
        return;
    };
    run(
        "diff apply (naive)",
        &d,
        graphtest::driver_test_diff_apply(&d, 10),
    );
}

#[test]
fn overlay_changes() {
    let Some((_h, d)) = overlay2("ovl-changes", Overlay2Options::default()) else {
        return;
    };
    run("changes", &d, graphtest::driver_test_changes(&d));
}

#[test]
fn overlay_changes_naive() {
    let options = Overlay2Options {
        force_naive_diff: true,
        ..Overlay2Options::default()
    };
    let Some((_h, d)) = overlay2("ovl-changes-naive", options) else {
        return;
    };
    run("changes (naive)", &d, graphtest::driver_test_changes(&d));
}

#[test]
fn overlay_set_quota_is_refused_cleanly() {
    let Some((_h, d)) = overlay2("ovl-quota", Overlay2Options::default()) else {
        return;
    };
    run("set quota", &d, graphtest::driver_test_set_quota(&d, false));
}
