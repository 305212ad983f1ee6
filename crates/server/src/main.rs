//! `taler-otp`: the operator's one binary (see `otp_server::cli`).

fn main() -> std::process::ExitCode {
    otp_server::cli::main()
}
