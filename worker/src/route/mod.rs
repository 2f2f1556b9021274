//! Routing: which destination a login goes to (reference §3.3).
//!
//! [`Router::route`] takes checked [`Credentials`], finds the routing identifier
//! ([`crate::identity`]), and resolves it through the [`cache`] in front of the
//! [`MappingStore`]. Every answer is a destination: the mapped one, or
//! `routing.default_destination` when there is no identifier, no row, an empty or
//! undeclared destination, or the store failed or timed out.

pub mod cache;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use postern_config::ipc::Hello;
use postern_config::model::{Config, MappingSource};
use postern_config::ErrorChain;

use crate::identity::{self, IdentityError, IdentityRules};
use crate::sasl::Credentials;
use crate::side::Side;

pub use cache::{Cache, CacheSettings, CacheStats, Outcome, Source};
pub use store::{FileStore, Lookup, MappingStore, StoreError};

/// Where a login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A declared destination's name.
    pub destination: Arc<str>,
    /// True when `destination` is the default because nothing (usable) was mapped.
    pub routed_to_default: bool,
    /// True when answered from a live cache entry, without waiting on the store.
    pub cached: bool,
}

/// A router that cannot be built from what the worker was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("mapping.source is \"file\" but the supervisor sent no mapping table")]
    NoTable,
    #[error("mapping.source = \"{kind}\" is not implemented yet")]
    Unsupported { kind: &'static str },
}

impl RouteError {
    pub fn side(&self) -> Side {
        Side::Local
    }
}

/// Resolves identifiers to destinations; one per worker, shared by its sessions.
pub struct Router {
    store: Arc<dyn MappingStore>,
    cache: Arc<Cache>,
    rules: IdentityRules,
    default_destination: Arc<str>,
    declared: Arc<HashSet<Arc<str>>>,
    lookup_timeout: Duration,
}

impl Router {
    /// A router over `store` with the settings of `config`.
    pub fn new(config: &Config, store: Arc<dyn MappingStore>) -> Router {
        let m = &config.mapping;
        Router {
            store,
            cache: Arc::new(Cache::new(CacheSettings::new(
                m.positive_ttl,
                m.negative_ttl,
                m.cache_max_entries,
            ))),
            rules: IdentityRules::from_config(config),
            default_destination: config.routing.default_destination.as_str().into(),
            declared: Arc::new(
                config
                    .destinations
                    .keys()
                    .map(|d| Arc::from(d.as_str()))
                    .collect(),
            ),
            lookup_timeout: m.lookup_timeout,
        }
    }

    /// The router for a worker: the file store from the table the supervisor shipped in
    /// `hello.material`.
    pub fn from_hello(hello: &Hello) -> Result<Router, RouteError> {
        let store: Arc<dyn MappingStore> = match &hello.config.mapping.source {
            MappingSource::File { .. } => {
                let table = hello.material.mapping.clone().ok_or(RouteError::NoTable)?;
                Arc::new(FileStore::new(table))
            }
            MappingSource::Redis { .. } => return Err(RouteError::Unsupported { kind: "redis" }),
            MappingSource::Sql { .. } => return Err(RouteError::Unsupported { kind: "sql" }),
        };
        Ok(Router::new(&hello.config, store))
    }

    pub fn rules(&self) -> &IdentityRules {
        &self.rules
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Routes a login: its identifier (post-processed; `None` when it has none) and its
    /// route. An identifier the safety check refuses is an error: answer "backend
    /// unavailable" and close.
    pub async fn route(
        &self,
        credentials: &Credentials,
    ) -> Result<(Option<String>, Route), IdentityError> {
        let id = identity::routing_identifier(credentials, &self.rules)?;
        let route = match &id {
            Some(id) => self.resolve(id).await,
            None => self.default_route(),
        };
        Ok((id, route))
    }

    /// The route for an identifier already post-processed ([`identity::post_process`]).
    pub async fn resolve(&self, identifier: &str) -> Route {
        let store = Arc::clone(&self.store);
        let declared = Arc::clone(&self.declared);
        let timeout = self.lookup_timeout;
        let key = identifier.to_owned();
        let (outcome, source) = self
            .cache
            .get_or_fetch(identifier, move || lookup(store, declared, key, timeout))
            .await;
        let route = match outcome {
            Outcome::Mapped(destination) => Route {
                destination,
                routed_to_default: false,
                cached: source == Source::Hit,
            },
            Outcome::Default | Outcome::Transient => Route {
                cached: source == Source::Hit,
                ..self.default_route()
            },
        };
        tracing::debug!(
            identifier,
            destination = %route.destination,
            default = route.routed_to_default,
            cached = route.cached,
            "routed"
        );
        route
    }

    /// The route of a login without an identifier.
    pub fn default_route(&self) -> Route {
        Route {
            destination: Arc::clone(&self.default_destination),
            routed_to_default: true,
            cached: false,
        }
    }
}

/// One store lookup, bounded by `timeout`, classified.
async fn lookup(
    store: Arc<dyn MappingStore>,
    declared: Arc<HashSet<Arc<str>>>,
    identifier: String,
    timeout: Duration,
) -> Outcome {
    let store_kind = store.kind();
    match tokio::time::timeout(timeout, store.lookup(&identifier)).await {
        Err(_) => {
            tracing::warn!(
                %identifier,
                store = store_kind,
                ?timeout,
                "mapping lookup timed out; routing to the default destination"
            );
            Outcome::Transient
        }
        Ok(Err(e)) => {
            tracing::warn!(
                %identifier,
                store = store_kind,
                error = %ErrorChain(&e),
                "mapping lookup failed; routing to the default destination"
            );
            Outcome::Transient
        }
        Ok(Ok(None)) => Outcome::Default,
        Ok(Ok(Some(value))) => {
            let value = value.trim();
            if value.is_empty() {
                return Outcome::Default;
            }
            match declared.get(value) {
                Some(name) => Outcome::Mapped(Arc::clone(name)),
                None => {
                    tracing::warn!(
                        %identifier,
                        store = store_kind,
                        destination = ?value,
                        "mapping names an undeclared destination; routing to the default \
                         destination"
                    );
                    Outcome::Default
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
