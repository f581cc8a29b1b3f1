//! `cargo bench -p bastion-bench --bench charges`: 100 concurrent identical charge requests,
//! one PSP call, the latency of the 99 replays; see `bastion_bench::charges`.

fn main() -> std::process::ExitCode {
    bastion_bench::charges::main()
}
