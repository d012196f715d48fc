//! Registered JSON Schemas (Draft 2020-12), compiled once per version and cached.
//!
//! A registered version is immutable, so a compiled validator never goes stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use lifeboat_core::{Error as DomainError, FieldError, SchemaRef, TenantId, schema_violation};
use serde_json::Value;

use crate::Error;

/// At most this many violations are reported for one save.
const ERRORS_MAX: usize = 50;

/// Compiled validators by tenant and `name@version`.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<(String, String), Arc<Validator>>>,
}

impl SchemaCache {
    /// Checks that `body` is a usable Draft 2020-12 schema; 422 material when not.
    pub fn compile(body: &Value) -> Result<Validator, Error> {
        jsonschema::draft202012::new(body).map_err(|e| {
            DomainError::Invalid {
                field: "schema",
                message: format!("not a valid JSON Schema (Draft 2020-12): {e}"),
            }
            .into()
        })
    }

    /// Validates `state` against `schema`, compiling it from `load` on first use.
    /// `load` answers the registered body, or `None` if the version is unknown.
    pub fn validate(
        &self,
        tenant: &TenantId,
        schema: &SchemaRef,
        state: &Value,
        load: impl FnOnce() -> Result<Option<Value>, Error>,
    ) -> Result<(), Error> {
        let key = (tenant.as_str().to_owned(), schema.to_string());
        let cached = self
            .compiled
            .lock()
            .ok()
            .and_then(|compiled| compiled.get(&key).cloned());
        let validator = match cached {
            Some(validator) => validator,
            None => {
                let body = load()?.ok_or_else(|| DomainError::UnknownSchema(schema.to_string()))?;
                let validator = Arc::new(SchemaCache::compile(&body)?);
                if let Ok(mut compiled) = self.compiled.lock() {
                    compiled.insert(key, Arc::clone(&validator));
                }
                validator
            }
        };
        let errors: Vec<FieldError> = validator
            .iter_errors(state)
            .take(ERRORS_MAX)
            .map(|e| FieldError {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(schema_violation(schema, errors).into())
        }
    }
}
