//! The cluster map: which store owns which partitions, read from `cluster.toml` (the
//! same file edge and store load) or, with no file, the embedded default of one local
//! store owning every partition. A map is validated whole: every partition owned by
//! exactly one store, ids unique, addresses parseable.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// Partitions in the embedded default map.
pub const DEFAULT_PARTITIONS: u32 = 256;
/// Internal address of the embedded default store.
pub const DEFAULT_STORE_ADDR: &str = "127.0.0.1:7400";
/// Id of the embedded default store.
pub const DEFAULT_STORE_ID: &str = "store-1";

/// Why a cluster map was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the expected shape.
    #[error("invalid cluster map: {0}")]
    Toml(#[from] toml::de::Error),
    /// Valid TOML that does not describe a usable cluster.
    #[error("invalid cluster map: {0}")]
    Invalid(String),
}

/// One store as the map lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEntry {
    /// Stable store id.
    pub id: String,
    /// Address of its internal (edge↔store) listener.
    pub addr: SocketAddr,
    /// The partitions it owns, ascending.
    pub partitions: Vec<u32>,
}

/// A validated cluster map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// Map version: bumped whenever ownership changes.
    pub version: u64,
    /// Number of partitions (fixed at cluster creation).
    pub partitions: u32,
    /// The stores.
    pub stores: Vec<StoreEntry>,
    /// Index into `stores` of each partition's owner.
    owner: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMap {
    version: u64,
    #[serde(default = "default_partitions")]
    partitions: u32,
    #[serde(rename = "store")]
    stores: Vec<FileStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    id: String,
    addr: String,
    /// Ranges like "0-127" or single partitions like "200".
    partitions: Vec<String>,
}

fn default_partitions() -> u32 {
    DEFAULT_PARTITIONS
}

fn parse_range(s: &str, partitions: u32) -> Result<std::ops::RangeInclusive<u32>, ClusterError> {
    let bad =
        || ClusterError::Invalid(format!("partition range {s:?} (expected \"N\" or \"A-B\")"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= partitions {
        return Err(ClusterError::Invalid(format!(
            "partition range {s:?} outside 0-{}",
            partitions.saturating_sub(1)
        )));
    }
    Ok(a..=b)
}

impl ClusterMap {
    /// The embedded default: one store on loopback owning every partition.
    pub fn embedded_default() -> Self {
        let stores = vec![StoreEntry {
            id: DEFAULT_STORE_ID.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7400)),
            partitions: (0..DEFAULT_PARTITIONS).collect(),
        }];
        Self {
            version: 1,
            partitions: DEFAULT_PARTITIONS,
            stores,
            owner: vec![0; DEFAULT_PARTITIONS as usize],
        }
    }

    /// Parse and validate a map from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ClusterError> {
        let file: FileMap = toml::from_str(text)?;
        if file.partitions == 0 || file.partitions > 65536 {
            return Err(ClusterError::Invalid("partitions must be 1..=65536".into()));
        }
        let mut owner: Vec<Option<usize>> = vec![None; file.partitions as usize];
        let mut ids = HashSet::new();
        let mut stores = Vec::with_capacity(file.stores.len());
        for (i, s) in file.stores.into_iter().enumerate() {
            if !ids.insert(s.id.clone()) {
                return Err(ClusterError::Invalid(format!(
                    "store id {:?} listed twice",
                    s.id
                )));
            }
            let addr: SocketAddr = s.addr.parse().map_err(|_| {
                ClusterError::Invalid(format!("store {:?}: bad addr {:?}", s.id, s.addr))
            })?;
            let mut mine = Vec::new();
            for r in &s.partitions {
                for p in parse_range(r, file.partitions)? {
                    if let Some(other) = owner[p as usize] {
                        return Err(ClusterError::Invalid(format!(
                            "partition {p} owned by both {:?} and {:?}",
                            stores
                                .get(other)
                                .map_or("?", |s: &StoreEntry| s.id.as_str()),
                            s.id
                        )));
                    }
                    owner[p as usize] = Some(i);
                    mine.push(p);
                }
            }
            mine.sort_unstable();
            stores.push(StoreEntry {
                id: s.id,
                addr,
                partitions: mine,
            });
        }
        let owner = owner
            .into_iter()
            .enumerate()
            .map(|(p, o)| {
                o.ok_or_else(|| ClusterError::Invalid(format!("partition {p} has no owner")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            version: file.version,
            partitions: file.partitions,
            stores,
            owner,
        })
    }

    /// Load `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ClusterError> {
        match path {
            None => Ok(Self::embedded_default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ClusterError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text)
            }
        }
    }

    /// The store owning `partition`.
    pub fn owner(&self, partition: u32) -> Option<&StoreEntry> {
        self.owner
            .get(partition as usize)
            .and_then(|&i| self.stores.get(i))
    }

    /// Index into [`ClusterMap::stores`] of the store owning `partition`.
    pub fn owner_index(&self, partition: u32) -> Option<usize> {
        self.owner.get(partition as usize).copied()
    }

    /// The store with id `id`.
    pub fn store(&self, id: &str) -> Option<&StoreEntry> {
        self.stores.iter().find(|s| s.id == id)
    }

    /// The partition owning `key` under this map.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        crate::partition::partition_of(key, self.partitions)
    }
}

/// The text of a map (`cluster.toml`, what `--cluster` reads) that splits `partitions`
/// into equal consecutive ranges over `stores` (id, address), the last taking the
/// remainder: for tools and tests that start local clusters.
pub fn even_split_toml(version: u64, partitions: u32, stores: &[(&str, &str)]) -> String {
    let mut text = format!("version = {version}\npartitions = {partitions}\n");
    let n = u32::try_from(stores.len()).unwrap_or(u32::MAX).max(1);
    let share = partitions / n;
    for (i, (id, addr)) in (0u32..).zip(stores) {
        let first = i * share;
        let last = if i + 1 == n {
            partitions - 1
        } else {
            first + share - 1
        };
        text.push_str(&format!(
            "[[store]]\nid = \"{id}\"\naddr = \"{addr}\"\npartitions = [\"{first}-{last}\"]\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_split_parses_back_to_the_same_ownership() {
        let text = even_split_toml(
            4,
            10,
            &[
                ("a", "127.0.0.1:1"),
                ("b", "127.0.0.1:2"),
                ("c", "127.0.0.1:3"),
            ],
        );
        let m = ClusterMap::from_toml(&text).unwrap();
        assert_eq!(m.version, 4);
        assert_eq!(m.partitions, 10);
        let owned: Vec<Vec<u32>> = m.stores.iter().map(|s| s.partitions.clone()).collect();
        assert_eq!(owned, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]);
    }

    const TWO: &str = r#"
version = 3
partitions = 8
[[store]]
id = "s1"
addr = "127.0.0.1:7400"
partitions = ["0-3"]
[[store]]
id = "s2"
addr = "127.0.0.1:7401"
partitions = ["4-6", "7"]
"#;

    #[test]
    fn two_stores() {
        let m = ClusterMap::from_toml(TWO).unwrap();
        assert_eq!((m.version, m.partitions), (3, 8));
        assert_eq!(m.owner(2).unwrap().id, "s1");
        assert_eq!(m.owner(7).unwrap().id, "s2");
        assert_eq!(m.store("s2").unwrap().partitions, [4, 5, 6, 7]);
        assert!(m.owner(8).is_none());
    }

    #[test]
    fn embedded_default_owns_everything() {
        let m = ClusterMap::load(None).unwrap();
        assert_eq!(m.partitions, DEFAULT_PARTITIONS);
        assert!((0..DEFAULT_PARTITIONS).all(|p| m.owner(p).unwrap().id == DEFAULT_STORE_ID));
        assert_eq!(m.stores[0].addr.to_string(), DEFAULT_STORE_ADDR);
    }

    #[test]
    fn invalid_maps_are_refused_with_a_reason() {
        let cases = [
            (TWO.replace("\"7\"", "\"6\""), "owned by both"),
            (TWO.replace(", \"7\"", ""), "partition 7 has no owner"),
            (TWO.replace("\"4-6\"", "\"4-9\""), "outside 0-7"),
            (TWO.replace("id = \"s2\"", "id = \"s1\""), "listed twice"),
            (TWO.replace("127.0.0.1:7401", "nowhere"), "bad addr"),
            (TWO.replace("\"0-3\"", "\"3-0\""), "outside"),
            (TWO.replace("partitions = 8", "partitions = 0"), "1..=65536"),
            (
                TWO.replace("version = 3", "version = 3\nbogus = 1"),
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let e = ClusterMap::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} does not mention {want}");
        }
    }
}
