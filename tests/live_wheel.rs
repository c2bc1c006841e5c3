//! The wheel: `scripts/wheel.sh` (run by scripts/test.sh before the tests) builds
//! `target/wheels/loopprof-VERSION-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl`;
//! this test checks its tag and metadata, installs it into a fresh venv with pip (no index),
//! and records a live asyncio process with the installed binary.

mod common;

use common::*;
use std::io::Read;
use std::process::Command;

fn wheel() -> std::path::PathBuf {
    let dir = root().join("target/wheels");
    let version = env!("CARGO_PKG_VERSION");
    let name =
        format!("loopprof-{version}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
    let path = dir.join(&name);
    assert!(
        path.exists(),
        "no {name} in target/wheels: run scripts/wheel.sh (scripts/test.sh does)"
    );
    path
}

/// A member of the wheel (a zip file), as text.
fn member(wheel: &std::path::Path, name: &str) -> String {
    let out = Command::new(venv("3.11").join("bin/python"))
        .args([
            "-c",
            "import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode())",
        ])
        .arg(wheel)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_wheel_installs_with_pip_and_records_a_live_process() {
    let whl = wheel();
    let version = env!("CARGO_PKG_VERSION");
    let dist = format!("loopprof-{version}.dist-info");
    let meta = member(&whl, &format!("{dist}/METADATA"));
    for needed in [
        "Name: loopprof\n",
        &format!("Version: {version}\n"),
        "License-Expression: MIT\n",
        "Requires-Python: >=3.8\n",
        "Summary: Find what blocks the asyncio event loop",
        "Classifier: Operating System :: POSIX :: Linux\n",
        "Classifier: Framework :: FastAPI\n",
    ] {
        assert!(
            meta.contains(needed),
            "{needed:?} missing from METADATA:\n{meta}"
        );
    }
    let tags = member(&whl, &format!("{dist}/WHEEL"));
    assert!(
        tags.contains("Tag: py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64\n"),
        "{tags}"
    );

    // A fresh venv, the wheel installed from the file alone.
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("venv");
    let ok = Command::new(venv("3.11").join("bin/python"))
        .args(["-m", "venv"])
        .arg(&env)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new(env.join("bin/pip"))
        .args(["install", "--no-index", "-q"])
        .arg(&whl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = env.join("bin/loopprof");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("loopprof {version}")
    );
    // The binary asks for nothing newer than glibc 2.17 (what manylinux2014 promises).
    let mut elf = Vec::new();
    std::fs::File::open(&bin)
        .unwrap()
        .read_to_end(&mut elf)
        .unwrap();
    let text = String::from_utf8_lossy(&elf);
    for newer in ["GLIBC_2.18", "GLIBC_2.28", "GLIBC_2.34"] {
        assert!(!text.contains(newer), "the binary needs {newer}");
    }

    // The installed binary records a live asyncio process, its tasks included.
    let p = spawn_script(
        &venv("3.11").join("bin/python"),
        "tasks_plain.py",
        &[],
        "ready",
    );
    let outdir = dir.path().join("rec");
    let out = Command::new(&bin)
        .args([
            "record",
            "-p",
            &p.pid().to_string(),
            "--duration",
            "1",
            "-o",
        ])
        .arg(&outdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = loopprof::recording::load(&outdir).unwrap();
    assert!(rec.samples.len() >= 20, "{} samples", rec.samples.len());
    assert!(!rec.task_snapshots.is_empty(), "tasks were read");
    drop(p);
}
