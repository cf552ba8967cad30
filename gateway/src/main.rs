//! `portcullis`: the command line of the gateway in this crate's library.

/// mimalloc, without transparent huge pages (ARCHITECTURE.md: less CPU per call than glibc's
/// malloc at the same idle memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    huge_pages_off();
    portcullis::main()
}

/// Transparent huge pages off for this process (and the stdio servers it starts, which inherit
/// the setting), unless `MIMALLOC_ALLOW_THP` is set: mimalloc then decides (what it reads as
/// off, `0`, `false`, `no` or `off`, turns them off before its first allocation; anything else
/// keeps them). On a host whose
/// THP mode is `always`, the kernel backs the allocator's heap with 2 MiB pages without being
/// asked: idle memory 46.4 MB, 29.5 MB with this (what was mapped before `main` keeps its huge
/// pages), 26.0 MB with the variable at `0`. A kernel that refuses (none since Linux 3.15) leaves
/// them as the host has them: only memory is at stake.
fn huge_pages_off() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}
