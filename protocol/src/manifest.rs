//! The `getmanifest` and `init` exchange.
//!
//! A plugin answers `getmanifest` with a [`Manifest`]: the options, RPC methods, hooks,
//! subscriptions and notification topics it brings. The node answers with `init`
//! ([`InitRequest`]): the typed option values and where to find the node.
//! Field names are CLN's; unknown fields are ignored both ways.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::options::OptionType;

/// Parameters of `getmanifest` sent by the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetManifestRequest {
    /// Whether the node runs with deprecated APIs enabled.
    #[serde(rename = "allow-deprecated-apis", default)]
    pub allow_deprecated_apis: bool,
}

/// A plugin's answer to `getmanifest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Options the plugin accepts (required by CLN, may be empty).
    #[serde(default)]
    pub options: Vec<OptionDecl>,
    /// RPC methods the plugin serves (required by CLN, may be empty).
    #[serde(default)]
    pub rpcmethods: Vec<RpcMethodDecl>,
    /// Notification topics the plugin wants; `"*"` means all but `log`.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// Hooks the plugin registers, with ordering constraints.
    #[serde(default)]
    pub hooks: Vec<HookDecl>,
    /// Feature bits to announce, per place (`init`, `node`, `channel`, `invoice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub featurebits: Option<Map<String, Value>>,
    /// Custom notification topics the plugin will emit.
    #[serde(default)]
    pub notifications: Vec<NotificationDecl>,
    /// Peer message types the plugin wants passed up (needed for even types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custommessages: Vec<u16>,
    /// Must be `true` when present (string ids are mandatory since CLN v25.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonnumericids: Option<bool>,
    /// The plugin answers `check` for its methods and dynamic options.
    #[serde(default)]
    pub cancheck: bool,
    /// The plugin may be started and stopped while the node runs.
    #[serde(default)]
    pub dynamic: bool,
    /// The plugin disables itself, with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<String>,
}

/// The places a plugin may set feature bits, as CLN names them.
pub const FEATURE_PLACES: [&str; 4] = ["init", "node", "channel", "invoice"];

/// A feature-bit field of a manifest (`featurebits.init`, ...): hex of a big-endian number
/// (`"2000"`, pyln's `format(bits, 'x')`), odd length allowed, an optional `0x`. Returns its
/// bytes, big-endian, without leading zero bytes.
pub fn parse_featurebits(hex: &str) -> Result<Vec<u8>, String> {
    let digits = hex.strip_prefix("0x").unwrap_or(hex);
    if digits.len() > 2 * 1024 {
        return Err("feature bits longer than 1024 bytes".into());
    }
    let mut nibbles = Vec::with_capacity(digits.len() + 1);
    if !digits.len().is_multiple_of(2) {
        nibbles.push(0u8);
    }
    for c in digits.chars() {
        let d = c
            .to_digit(16)
            .ok_or_else(|| format!("feature bits '{hex}' are not hex"))?;
        nibbles.push(u8::try_from(d).unwrap_or(0));
    }
    let mut out: Vec<u8> = nibbles
        .chunks_exact(2)
        .map(|p| match p {
            [hi, lo] => hi << 4 | lo,
            _ => 0,
        })
        .collect();
    while out.first() == Some(&0) {
        out.remove(0);
    }
    Ok(out)
}

impl Manifest {
    /// The feature bits this manifest sets at `place` (big-endian bytes, empty when none).
    pub fn featurebits_at(&self, place: &str) -> Result<Vec<u8>, String> {
        match self.featurebits.as_ref().and_then(|f| f.get(place)) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::String(s)) => parse_featurebits(s),
            Some(other) => Err(format!(
                "featurebits.{place} must be a hex string, not {other}"
            )),
        }
    }
}

/// `a | b` for big-endian feature bytes.
pub fn or_featurebits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = a.len().max(b.len());
    let at = |v: &[u8], i: usize| {
        (i + v.len())
            .checked_sub(n)
            .and_then(|j| v.get(j))
            .copied()
            .unwrap_or(0)
    };
    (0..n).map(|i| at(a, i) | at(b, i)).collect()
}

/// One option in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionDecl {
    /// Lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// The value type.
    #[serde(rename = "type")]
    pub kind: OptionType,
    /// Shown in `--help`.
    #[serde(default)]
    pub description: String,
    /// The default value; `null` or absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The option may be given several times; the plugin receives an array.
    #[serde(default)]
    pub multi: bool,
    /// The option can be changed at run time with `setconfig`.
    #[serde(default)]
    pub dynamic: bool,
    /// `false`, `true`, or `[start]`/`[start, end]` version strings.
    #[serde(default, skip_serializing_if = "is_not_deprecated")]
    pub deprecated: Value,
}

/// One RPC method in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcMethodDecl {
    /// The method name, unique across the node.
    pub name: String,
    /// Parameter synopsis, optional ones in `[...]`, e.g. `"name [greeting]"`.
    #[serde(default)]
    pub usage: String,
    /// One line saying what it does (ignored by CLN since v24.08; shown by our `help`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A paragraph (shown by our `help CMD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_description: Option<String>,
    /// A category for grouping in `help`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `false`, `true`, or `[start]`/`[start, end]` version strings.
    #[serde(default, skip_serializing_if = "is_not_deprecated")]
    pub deprecated: Value,
}

/// A hook registration: a bare name or an object with ordering constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookDecl {
    /// `"rpc_command"`.
    Name(String),
    /// `{"name": "rpc_command", "before": [..], "after": [..], "filters": [..]}`.
    Full {
        /// The hook name.
        name: String,
        /// Plugins (names or paths) that must come after this one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        before: Vec<String>,
        /// Plugins (names or paths) that must come before this one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<String>,
        /// Only call for these method names (`rpc_command`) or message types (`custommsg`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filters: Option<Vec<Value>>,
    },
}

impl HookDecl {
    /// The hook name.
    pub fn name(&self) -> &str {
        match self {
            HookDecl::Name(n) => n,
            HookDecl::Full { name, .. } => name,
        }
    }

    /// Plugins that must run after this one.
    pub fn before(&self) -> &[String] {
        match self {
            HookDecl::Name(_) => &[],
            HookDecl::Full { before, .. } => before,
        }
    }

    /// Plugins that must run before this one.
    pub fn after(&self) -> &[String] {
        match self {
            HookDecl::Name(_) => &[],
            HookDecl::Full { after, .. } => after,
        }
    }

    /// The filters, if any.
    pub fn filters(&self) -> Option<&[Value]> {
        match self {
            HookDecl::Name(_) => None,
            HookDecl::Full { filters, .. } => filters.as_deref(),
        }
    }
}

/// A custom notification topic a plugin emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationDecl {
    /// The topic.
    pub method: String,
}

/// Parameters of `init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitRequest {
    /// Typed values of the plugin's options (only those with a value or a default).
    pub options: Map<String, Value>,
    /// Where the node is and what it runs.
    pub configuration: InitConfiguration,
}

/// `init.configuration`; every field `cln-plugin` requires is always present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfiguration {
    /// The node's network directory (absolute).
    #[serde(rename = "lightning-dir")]
    pub lightning_dir: String,
    /// The RPC socket, relative to `lightning-dir` unless absolute.
    #[serde(rename = "rpc-file")]
    pub rpc_file: String,
    /// `true` when the plugin starts with the node, `false` for `plugin start`.
    pub startup: bool,
    /// `bitcoin`, `testnet`, `testnet4`, `signet` or `regtest`.
    pub network: String,
    /// Hex feature bits per place.
    pub feature_set: Map<String, Value>,
    /// SOCKS proxy, only when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    /// Only when a proxy is configured.
    #[serde(
        rename = "torv3-enabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub torv3_enabled: Option<bool>,
    /// Only when a proxy is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_use_proxy: Option<bool>,
}

fn is_not_deprecated(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

/// Whether a `deprecated` member marks the item as deprecated.
pub fn is_deprecated(v: &Value) -> bool {
    !is_not_deprecated(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn featurebits_parse_as_pyln_writes_them() {
        assert_eq!(parse_featurebits(""), Ok(vec![]));
        assert_eq!(parse_featurebits("2000"), Ok(vec![0x20, 0x00]));
        assert_eq!(parse_featurebits("200"), Ok(vec![0x02, 0x00]));
        assert_eq!(parse_featurebits("0x0001"), Ok(vec![0x01]));
        assert!(parse_featurebits("zz").is_err());
        // 1 << 201, as pyln's Plugin(init_features=1 << 201) writes it.
        let bits = parse_featurebits(&format!("2{}", "0".repeat(50))).unwrap_or_default();
        assert_eq!(bits.len(), 26);
        assert_eq!(or_featurebits(&[0x01, 0x00], &[0x02]), vec![0x01, 0x02]);
        assert_eq!(or_featurebits(&[], &[0x80]), vec![0x80]);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_pyln_manifest() {
        let m: Manifest = serde_json::from_value(json!({
            "options": [{"name":"greeting","type":"string","default":"hi","description":"d",
                          "deprecated":false,"dynamic":true,"multi":false}],
            "rpcmethods": [{"name":"hello","category":"plugin","usage":"[name]",
                             "description":"says hi","long_description":"says hi"}],
            "subscriptions": ["connect","*"],
            "hooks": ["peer_connected", {"name":"rpc_command","before":["b.py"]}],
            "featurebits": {}, "notifications": [{"method":"custom"}],
            "custommessages": [], "nonnumericids": true, "dynamic": true
        }))
        .expect("parses");
        assert_eq!(m.options[0].kind, OptionType::String);
        assert_eq!(m.hooks[1].name(), "rpc_command");
        assert_eq!(m.hooks[1].before(), ["b.py".to_string()]);
        assert!(m.dynamic && !m.cancheck);
    }

    #[test]
    fn deprecated_marker() {
        assert!(!is_deprecated(&json!(false)));
        assert!(is_deprecated(&json!(["v24.02"])));
    }
}
