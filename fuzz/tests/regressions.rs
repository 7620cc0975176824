//! Replays every input under `fuzz/regressions/TARGET/` (crashers found so far, kept after
//! the fix) through its target's check. `cargo test` in `fuzz/`, no libFuzzer needed.

use std::fs;
use std::path::Path;

#[test]
fn regressions_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, check) in mongrel2_transceiver_fuzz::TARGETS {
        let Ok(entries) = fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            let input = fs::read(&path).expect("readable input");
            eprintln!("{name}: {}", path.display());
            check(&input);
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs under {}",
        root.display()
    );
}
