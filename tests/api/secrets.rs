//! The key that seals storage credentials: the generated key file, refusal to start
//! with another key, and `labelport secrets rotate`.

use crate::helpers::{spawn_app_with, Backend};
use clap::Parser;
use labelport::secrets::SecretBox;
use serde_json::json;

/// A server using the key file in its data directory (no `LABELPORT_SECRET_KEY`).
async fn app_with_key_file() -> crate::helpers::TestApp {
    spawn_app_with(Backend::Sqlite, |s| s.secret_key = None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_key_file_is_private_to_its_owner() {
    // Arrange + Act
    let app = app_with_key_file().await;

    // Assert
    let path = app.state.settings.data_dir.join("secret.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{path:?}");
    assert!(SecretBox::parse_key(&std::fs::read_to_string(&path).unwrap()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_with_another_key_refuses_to_start_with_a_clear_error() {
    // Arrange
    let app = app_with_key_file().await;
    let mut settings = (*app.state.settings).clone();
    settings.port = 0;
    settings.secret_key = Some(SecretBox::generate_key());

    // Act
    let started = labelport::startup::Application::build(settings).await;

    // Assert
    let err = started.err().expect("refused").to_string();
    assert!(err.contains("not the key the stored storage credentials were encrypted with"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_re_encrypts_every_stored_secret_under_a_new_key() {
    // Arrange: a storage with secrets, sealed under the key file.
    let app = app_with_key_file().await;
    let data_dir = app.state.settings.data_dir.clone();
    let project = app.create_project("rotate").await;
    let mut fields = labelport::db::StorageFields {
        synchronizable: true,
        export_mode: "annotation".into(),
        config: json!({"bucket": "b"}),
        ..Default::default()
    };
    let mut secrets = serde_json::Map::new();
    secrets.insert("aws_secret_access_key".into(), json!("very-secret"));
    fields.secrets = app.state.secrets.seal_map(&secrets);
    let storage = app.state.db.create_storage("s3", project, &fields, None).await.unwrap();
    let old_key = std::fs::read_to_string(data_dir.join("secret.key")).unwrap();

    // Act
    let cli =
        labelport::cli::Cli::parse_from(["labelport", "secrets", "rotate", "--data-dir", data_dir.to_str().unwrap()]);
    labelport::cli::run(cli).await.expect("rotation succeeds");

    // Assert: the new key file opens the secrets; the old key no longer does.
    let new_key = std::fs::read_to_string(data_dir.join("secret.key")).unwrap();
    assert_ne!(new_key, old_key);
    let sealed = app.state.db.storage_by_id(storage.id).await.unwrap().fields.secrets.unwrap();
    let new_box = SecretBox::load(None, &data_dir).unwrap();
    assert_eq!(new_box.open_map(Some(&sealed)).unwrap(), secrets);
    assert!(app.state.secrets.open_map(Some(&sealed)).is_err(), "the old key is retired");
    let settings = labelport::config::Settings { port: 0, secret_key: None, ..(*app.state.settings).clone() };
    let restarted =
        labelport::startup::Application::build(settings).await.expect("a server starts with the new key file");
    // The sealed legacy tokens were re-encrypted too.
    let admin = restarted.state().db.user_by_email("admin@example.com").await.unwrap();
    assert_eq!(restarted.state().db.legacy_token(admin.id).await.unwrap(), app.token);
}
