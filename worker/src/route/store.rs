//! Mapping stores: where an identifier's destination is looked up. The file store is
//! an in-memory table the supervisor read and shipped (workers open no file); Redis
//! and SQL stores implement the same trait.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use postern_config::material::MappingTable;

use crate::side::Side;

/// A lookup in flight.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, StoreError>> + Send + 'a>>;

/// A source of identifier -> destination rows. `lookup` gets the normalized identifier
/// and answers `Ok(None)` when there is no row; the router applies `lookup_timeout`,
/// classifies the answer and caches it.
pub trait MappingStore: Send + Sync {
    /// `file`, `redis` or `sql`, for logs.
    fn kind(&self) -> &'static str;

    fn lookup<'a>(&'a self, identifier: &'a str) -> Lookup<'a>;
}

/// A store that could not answer. Its reply routes to the default destination for a
/// short while (a *transient* cache entry).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{store} mapping store failed")]
    Backend {
        store: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("{store} mapping store failed: {message}")]
    Message {
        store: &'static str,
        message: String,
    },
}

impl StoreError {
    pub fn side(&self) -> Side {
        Side::Upstream
    }
}

/// `mapping.source = "file"`: the table from `Material::mapping`, keys already
/// normalized by the supervisor.
pub struct FileStore {
    table: HashMap<String, String>,
}

impl FileStore {
    pub fn new(table: MappingTable) -> FileStore {
        FileStore {
            table: table.into_inner().into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileStore({} rows)", self.table.len())
    }
}

impl MappingStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn lookup<'a>(&'a self, identifier: &'a str) -> Lookup<'a> {
        Box::pin(std::future::ready(Ok(self.table.get(identifier).cloned())))
    }
}
