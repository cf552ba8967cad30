//! `portcullis`: the command line of the gateway in this crate's library.

/// mimalloc, without transparent huge pages (ARCHITECTURE.md: less CPU per call than glibc's
/// malloc at the same idle memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::main()
}
