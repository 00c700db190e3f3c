//! Which served model a request's model name means. The rule (docs/http.md):
//! 1. the directory name, exactly;
//! 2. an alias from `aliases.json` in the model directory (`{"alias": "directory", …}`);
//! 3. the hosted name's last `/`-separated part, compared with the directory names ignoring case
//!    and treating `_` as `-`: `BAAI/bge-m3`, `@cf/baai/bge-small-en-v1.5` and `bge_large_en`
//!    find `bge-m3`, `bge-small-en-v1.5` and `bge-large-en`.
//!
//! Aliases are compared by the same key as in 3.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::engine::ServedModel;

pub struct ModelNames {
    models: Vec<Arc<ServedModel>>,
    /// Alias key -> (the alias as written, directory name), from aliases.json.
    aliases: HashMap<String, (String, String)>,
}

/// The comparison key of a name: its last '/'-separated part, lower case, '_' as '-'.
pub fn key(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.trim().to_lowercase().replace('_', "-")
}

impl ModelNames {
    /// The served models and the aliases of `dir`/aliases.json. A missing file means no
    /// aliases; an unreadable or invalid one also means none, and its error is returned beside
    /// (the server reports it in /health rather than refusing to start).
    pub fn new(models: Vec<Arc<ServedModel>>, dir: &Path) -> (ModelNames, Option<String>) {
        let path = dir.join("aliases.json");
        let parsed = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<HashMap<String, String>>(&text)
                .map_err(|e| format!("aliases.json: expected {{\"alias\": \"model directory\", ...}}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(format!("aliases.json cannot be read: {e}")),
        };
        let (map, error) = match parsed {
            Ok(map) => (map, None),
            Err(e) => {
                eprintln!("bge-serve: {e}; no aliases");
                (HashMap::new(), Some(e))
            }
        };
        for target in map.values() {
            if !models.iter().any(|m| &m.name == target) {
                eprintln!("bge-serve: aliases.json: alias target \"{target}\" is not a served model");
            }
        }
        let aliases = map.into_iter().map(|(alias, target)| (key(&alias), (alias, target))).collect();
        (ModelNames { models, aliases }, error)
    }

    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.models
    }

    /// The model `name` means, if any.
    pub fn resolve(&self, name: &str) -> Option<Arc<ServedModel>> {
        if let Some(m) = self.models.iter().find(|m| m.name == name) {
            return Some(m.clone());
        }
        let wanted = key(name);
        if wanted.is_empty() {
            return None;
        }
        if let Some((_, target)) = self.aliases.get(&wanted) {
            return self.models.iter().find(|m| &m.name == target).cloned();
        }
        // Models are sorted by directory name: the first of two that share a key wins.
        self.models.iter().find(|m| key(&m.name) == wanted).cloned()
    }

    /// The aliases that lead to `model` (from aliases.json), sorted.
    pub fn aliases_of(&self, model: &str) -> Vec<String> {
        let mut found: Vec<String> = self.aliases.values().filter(|(_, t)| t.as_str() == model).map(|(a, _)| a.clone()).collect();
        found.sort();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn hosted_names_reduce_to_directory_keys() {
        assert_eq!(key("BAAI/bge-m3"), "bge-m3");
        assert_eq!(key("@cf/baai/bge-small-en-v1.5"), "bge-small-en-v1.5");
        assert_eq!(key("bge_large_en"), "bge-large-en");
        assert_eq!(key("sentence-transformers/all-MiniLM-L6-v2"), "all-minilm-l6-v2");
        assert_eq!(key("/"), "");
    }
}
