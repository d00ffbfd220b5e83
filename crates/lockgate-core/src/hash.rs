//! The hash maps the engine keeps keyed data in: `hashbrown` tables with the Fx hash
//! (fast on short keys, not collision-resistant: like the hash maps of Spark and Flink,
//! they are not meant for keys chosen to collide), which also offer in-place updates
//! (`replace_entry_with`, `get_or_insert_with`) that spare a key clone or a second
//! lookup.

/// A hash map with the Fx hash.
pub(crate) type FxHashMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A hash set with the Fx hash.
pub(crate) type FxHashSet<K> = hashbrown::HashSet<K, rustc_hash::FxBuildHasher>;
