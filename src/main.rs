use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    labelport::telemetry::init();
    let cli = labelport::cli::Cli::parse();
    match labelport::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "labelport failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
