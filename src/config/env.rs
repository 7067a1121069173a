//! Environment and secrets: the variables that carry credentials (the names the Atlas CLI
//! and Terraform use), where variables come from ([`Env`]), and secrets read from files.
//!
//! Secrets never come from flag values (they would show in `ps`): only from these variables,
//! from a variable the YAML file names, or from a file.

use std::path::{Path, PathBuf};

use super::err;
use super::file::FileCredentials;
use crate::cli::Flags;
use crate::model::{ConfigError, Credentials, Secret};

/// Service account client id.
pub const CLIENT_ID: &str = "MONGODB_ATLAS_CLIENT_ID";
/// Service account client secret.
pub const CLIENT_SECRET: &str = "MONGODB_ATLAS_CLIENT_SECRET";
/// API key, public part (the Digest user).
pub const PUBLIC_API_KEY: &str = "MONGODB_ATLAS_PUBLIC_API_KEY";
/// API key, private part (the Digest password).
pub const PRIVATE_API_KEY: &str = "MONGODB_ATLAS_PRIVATE_API_KEY";

/// Where environment variables come from; tests pass a map instead of the process environment.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<&str, &str, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| (*v).to_owned())
            .filter(|v| !v.is_empty())
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<Secret, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Ok(_) => err(format!("{what}: file {} is empty", path.display())),
        Err(e) => err(format!("{what}: cannot read {}: {e}", path.display())),
    }
}

/// Reads the credentials from the environment and the secret-file flags.
///
/// # Errors
/// Names the variable when none, only half, or both kinds of credentials are given.
pub fn credentials_from_env(flags: &Flags, env: &dyn Env) -> Result<Credentials, ConfigError> {
    let client_id = env.var(CLIENT_ID);
    let client_secret = match (&flags.client_secret_file, env.var(CLIENT_SECRET)) {
        (Some(_), Some(_)) => {
            return err(format!(
                "--atlas.client-secret-file and {} are both set; use one",
                CLIENT_SECRET
            ));
        }
        (Some(path), None) => Some(read_secret_file(path, "--atlas.client-secret-file")?),
        (None, v) => v.map(Secret::new),
    };
    let public_key = env.var(PUBLIC_API_KEY);
    let private_key = match (&flags.private_key_file, env.var(PRIVATE_API_KEY)) {
        (Some(_), Some(_)) => {
            return err(format!(
                "--atlas.private-api-key-file and {} are both set; use one",
                PRIVATE_API_KEY
            ));
        }
        (Some(path), None) => Some(read_secret_file(path, "--atlas.private-api-key-file")?),
        (None, v) => v.map(Secret::new),
    };
    let service_account = client_id.is_some() || client_secret.is_some();
    let api_key = public_key.is_some() || private_key.is_some();
    match (service_account, api_key) {
        (true, true) => err(format!(
            "credentials: both a service account ({}) and an API key ({}) are set; use one",
            CLIENT_ID, PUBLIC_API_KEY
        )),
        (false, false) => err(format!(
            "credentials: none given; set {} and {} (service account) or {} and {} (API key)",
            CLIENT_ID, CLIENT_SECRET, PUBLIC_API_KEY, PRIVATE_API_KEY
        )),
        (true, false) => match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Credentials::ServiceAccount {
                client_id,
                client_secret,
            }),
            (None, _) => err(format!("credentials: {} is not set", CLIENT_ID)),
            (_, None) => err(format!(
                "credentials: {} (or --atlas.client-secret-file) is not set",
                CLIENT_SECRET
            )),
        },
        (false, true) => match (public_key, private_key) {
            (Some(public_key), Some(private_key)) => Ok(Credentials::ApiKey {
                public_key,
                private_key,
            }),
            (None, _) => err(format!("credentials: {} is not set", PUBLIC_API_KEY)),
            (_, None) => err(format!(
                "credentials: {} (or --atlas.private-api-key-file) is not set",
                PRIVATE_API_KEY
            )),
        },
    }
}

/// A secret of the YAML file at `key`: read from `<key>_file` or from the variable
/// `<key>_env` names; neither is `None`.
fn file_secret(
    key: &str,
    file: Option<&PathBuf>,
    var: Option<&String>,
    env: &dyn Env,
) -> Result<Option<Secret>, ConfigError> {
    match (file, var) {
        (Some(_), Some(_)) => err(format!("{key}: give either _file or _env, not both")),
        (Some(path), None) => read_secret_file(path, &format!("{key}_file")).map(Some),
        (None, Some(name)) => match env.var(name) {
            Some(v) => Ok(Some(Secret::new(v))),
            None => err(format!("{key}_env: environment variable {name} is not set")),
        },
        (None, None) => Ok(None),
    }
}

/// The credentials an org of the YAML file gives at `key`: a service account or an API key,
/// their secret halves read from a file or a named variable.
///
/// # Errors
/// Names the key when a secret cannot be read, or when not exactly one kind is complete.
pub(super) fn file_credentials(
    key: &str,
    c: &FileCredentials,
    env: &dyn Env,
) -> Result<Credentials, ConfigError> {
    let secret = file_secret(
        &format!("{key}.client_secret"),
        c.client_secret_file.as_ref(),
        c.client_secret_env.as_ref(),
        env,
    )?;
    let private = file_secret(
        &format!("{key}.private_api_key"),
        c.private_api_key_file.as_ref(),
        c.private_api_key_env.as_ref(),
        env,
    )?;
    match (&c.client_id, secret, &c.public_api_key, private) {
        (Some(id), Some(secret), None, None) => Ok(Credentials::ServiceAccount {
            client_id: id.clone(),
            client_secret: secret,
        }),
        (None, None, Some(public), Some(private)) => Ok(Credentials::ApiKey {
            public_key: public.clone(),
            private_key: private,
        }),
        _ => err(format!(
            "{key}: give client_id with client_secret_file or client_secret_env, or \
             public_api_key with private_api_key_file or private_api_key_env (one kind only)"
        )),
    }
}
