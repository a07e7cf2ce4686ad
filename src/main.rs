use clap::Parser;

// mimalloc hands freed memory back to the OS; glibc's arenas kept the peak of a large
// import for the life of the process (bench: 188 MB vs 60 MB after a 100k import).
// With `override` it also serves the C code's malloc (SQLite's), which glibc's
// allocator made a tenth of a sync's instructions (callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    labelport::telemetry::init();
    let cli = labelport::cli::Cli::parse();
    let client = cli.is_client();
    match labelport::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A client command's failure is the user's answer, not a server event.
            if !client {
                tracing::error!(error.cause_chain = ?e, error.message = %e, "labelport failed");
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
