//! `portcullis`: the command line of the gateway in this crate's library.

fn main() -> std::process::ExitCode {
    portcullis::main()
}
