//! `apikey create|list|revoke`: keys are printed once at creation, stored as hashes.

use crate::config::Config;
use crate::exit::{command_error, EX_DATAERR, EX_OSERR};
use crate::model::Role;
use crate::server::config_store_error as store_error;
use crate::server::ServeError;
use crate::store::Store;

command_error!(
    /// Why `apikey create|list|revoke` failed.
    KeysError,
    from ServeError
);

/// The configured store, SQLite or PostgreSQL (SPEC §10).
fn open(config: &Config) -> Result<std::sync::Arc<dyn Store>, KeysError> {
    Ok(crate::server::open_store(config, 1)?)
}

pub fn create(config: &Config, name: &str, role: &str) -> Result<(), KeysError> {
    let role = Role::parse(role)
        .ok_or_else(|| KeysError::usage(format!("--role must be read or write, not {role:?}")))?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeysError::usage("--name must be 1 to 100 characters"));
    }
    let key = crate::auth::generate()
        .map_err(|e| KeysError::new(EX_OSERR, format!("cannot read the OS random source: {e}")))?;
    let store = open(config)?;
    let rec = store
        .create_key(name.to_string(), role, key.prefix.clone(), key.hash)
        .map_err(|e| store_error(e, config))?;
    let _ = store.close();
    eprintln!(
        "created API key {} ({}, role {}); it is shown only once:",
        rec.id,
        rec.name,
        role.as_str()
    );
    println!("{}", key.secret);
    Ok(())
}

pub fn list(config: &Config) -> Result<(), KeysError> {
    let store = open(config)?;
    let keys = store.list_keys().map_err(|e| store_error(e, config))?;
    let _ = store.close();
    println!(
        "{:<6} {:<24} {:<6} {:<14} {:<25} status",
        "id", "name", "role", "prefix", "created"
    );
    for k in keys {
        let status = match k.revoked_at {
            Some(t) => format!("revoked {}", crate::clock::rfc3339(t)),
            None => "active".into(),
        };
        println!(
            "{:<6} {:<24} {:<6} {:<14} {:<25} {status}",
            k.id,
            k.name,
            k.role.as_str(),
            k.prefix,
            crate::clock::rfc3339(k.created_at)
        );
    }
    Ok(())
}

pub fn revoke(config: &Config, id: i64) -> Result<(), KeysError> {
    let store = open(config)?;
    let k = store.revoke_key(id).map_err(|e| match e {
        crate::store::StoreError::NotFound(_) => {
            KeysError::new(EX_DATAERR, format!("no API key with id {id}"))
        }
        e => store_error(e, config).into(),
    })?;
    let _ = store.close();
    println!("revoked API key {} ({})", k.id, k.name);
    Ok(())
}
