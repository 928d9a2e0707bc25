//! Link settings of the `mdld` binary.
//!
//! On Linux with glibc the binary is linked with its relative relocations packed as
//! `DT_RELR` (`-z pack-relative-relocs`), when the linker and the C library can: the dynamic
//! loader then applies ~14 000 relocations from 4 KiB instead of reading 340 KiB of
//! `.rela.dyn` at every start, and an idle daemon keeps ~0.5 MiB less resident
//! (bench/README.md "Idle memory"). The binary stays position-independent. A probe links and
//! runs a small C program the same way first; if anything about it fails (an older linker
//! or glibc, a cross build), the flag is left out. `MDL_NO_RELR=1` leaves it out as well.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MDL_NO_RELR");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || !native
        || std::env::var_os("MDL_NO_RELR").is_some()
    {
        return;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_string());
    if packs_relocations(&linker, Path::new(&var("OUT_DIR"))) {
        println!("cargo:rustc-link-arg-bin=mdld=-Wl,-z,pack-relative-relocs");
    }
}

/// True when `linker` links a position-independent program with packed relative relocations
/// without a warning, and the program runs.
fn packs_relocations(linker: &str, out_dir: &Path) -> bool {
    let source = out_dir.join("relr_probe.c");
    let program = out_dir.join("relr_probe");
    // `pointer` needs a relative relocation in a position-independent executable.
    let probe =
        "static int value = 7;\nint *pointer = &value;\nint main(void) { return *pointer - 7; }\n";
    if std::fs::write(&source, probe).is_err() {
        return false;
    }
    let linked = Command::new(linker)
        .args([
            "-fPIE",
            "-pie",
            "-Wl,-z,pack-relative-relocs",
            "-Wl,--fatal-warnings",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .output()
        .is_ok_and(|out| out.status.success());
    linked
        && Command::new(&program)
            .output()
            .is_ok_and(|out| out.status.success())
}
