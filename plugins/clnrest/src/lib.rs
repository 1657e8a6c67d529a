//! What `clnrest` does with a request before and after the node runs it, kept apart from
//! the server so that it can be tested (and fuzzed) without sockets: which RPC method a
//! path names, how the body becomes params, how the reply is rendered for the `Accept`
//! header, which rune check applies, and the error bodies and HTTP statuses CLN's clnrest
//! gives for each failure.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

#[cfg(feature = "server")]
pub mod certs;
pub mod openapi;

/// An HTTP method clnrest routes (`clnrest-register-path` takes these five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method of an HTTP request, or `None` for one clnrest does not route.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What a request is checked against: CLN's `checkrune` params (`method` and `params`
/// default to the request's own).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct RuneCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodeid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

impl RuneCheck {
    /// `checkrune`'s params for `rune`, moving the fields in (no copy of the params).
    pub fn into_checkrune(self, rune: &str) -> Value {
        let mut p = Map::new();
        p.insert("rune".into(), Value::String(rune.to_owned()));
        if let Some(n) = self.nodeid {
            p.insert("nodeid".into(), Value::String(n));
        }
        if let Some(m) = self.method {
            p.insert("method".into(), Value::String(m));
        }
        if let Some(params) = self.params {
            p.insert("params".into(), Value::Object(params));
        }
        Value::Object(p)
    }
}

/// Where a path leads: the RPC method, whether a rune is needed, and what it is checked
/// against.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub rpc_method: String,
    pub rune_required: bool,
    pub rune_restrictions: Option<RuneCheck>,
}

impl Route {
    /// The `checkrune` params for this request: the route's restrictions with the request's
    /// method and params where the route leaves them out.
    pub fn rune_check(&self, params: &Map<String, Value>) -> RuneCheck {
        let mut c = self.rune_restrictions.clone().unwrap_or_default();
        if c.method.is_none() {
            c.method = Some(self.rpc_method.clone());
        }
        if c.params.is_none() {
            c.params = Some(params.clone());
        }
        c
    }
}

/// An HTTP error with CLN's JSON body (`code`, `message`, `data`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestError {
    pub status: u16,
    pub code: Option<i64>,
    pub message: String,
    pub data: Option<Value>,
}

impl RestError {
    pub fn new(status: u16, code: Option<i64>, message: impl Into<String>) -> Self {
        RestError {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// An error the node (or a plugin) returned for the called method: 404 for an unknown
    /// command, 500 for the rest, with the node's code, message and data.
    pub fn from_rpc(code: i64, message: String, data: Option<Value>) -> Self {
        RestError {
            status: if code == -32601 { 404 } else { 500 },
            code: Some(code),
            message,
            data,
        }
    }

    /// The error body: `{"code": ..., "message": ..., "data": ...}` as CLN's clnrest sends.
    pub fn body(&self) -> Value {
        let mut o = Map::new();
        if let Some(c) = self.code {
            o.insert("code".into(), json!(c));
        }
        o.insert("message".into(), json!(self.message));
        if let Some(d) = &self.data {
            o.insert("data".into(), d.clone());
        }
        Value::Object(o)
    }
}

impl std::fmt::Display for RestError {
    /// As CLN's: the status's reason, then `Error code N: message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = match self.status {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method not allowed",
            406 => "Not Acceptable",
            _ => "Internal Server Error",
        };
        match self.code {
            Some(c) => write!(f, "{reason}: Error code {c}: {}", self.message),
            None => write!(f, "{reason}: {}", self.message),
        }
    }
}

/// The dynamic paths plugins registered with `clnrest-register-path`.
pub type DynRouter = matchit::Router<HashMap<Method, Route>>;

/// The route for a request to `path` (without the leading `/`), and the params its
/// captures give. Registered paths come first; then `v1/<method>` (POST only).
pub fn resolve(
    dynamic: &DynRouter,
    path: &str,
    method: Method,
) -> Result<(Route, Map<String, Value>), RestError> {
    let mut params = Map::new();
    if let Ok(m) = dynamic.at(path) {
        for (k, v) in m.params.iter() {
            params.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        return match m.value.get(&method) {
            Some(r) => Ok((r.clone(), params)),
            None => Err(RestError::new(
                405,
                Some(-32601),
                format!(
                    "Dynamic path: {path} has no http_method:{} registered",
                    method.as_str()
                ),
            )),
        };
    }
    if let Some((prefix, suffix)) = path.split_once("v1/") {
        if !prefix.is_empty() {
            return Err(RestError::new(
                404,
                Some(-32601),
                "Path invalid, version missing for CLN methods",
            ));
        }
        if method != Method::Post {
            return Err(RestError::new(
                405,
                Some(-32601),
                "Path invalid, http_method must be POST for CLN methods",
            ));
        }
        return Ok((
            Route {
                rpc_method: suffix.to_owned(),
                rune_required: true,
                rune_restrictions: None,
            },
            params,
        ));
    }
    Err(RestError::new(404, Some(-32601), "Path not found"))
}

/// A body or reply format clnrest reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Xml,
    Form,
}

impl Format {
    /// The format a `Content-Type` or `Accept` header names (JSON for `*/*`).
    pub fn from_header(h: &str) -> Option<Format> {
        if h.contains("*/*") || h.contains("application/json") {
            Some(Format::Json)
        } else if h.contains("application/yaml") {
            Some(Format::Yaml)
        } else if h.contains("application/xml") {
            Some(Format::Xml)
        } else if h.contains("application/x-www-form-urlencoded") {
            Some(Format::Form)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::Xml => "application/xml",
            Format::Form => "application/x-www-form-urlencoded",
        }
    }
}

fn internal(message: String) -> RestError {
    RestError::new(500, None, message)
}

/// Adds the params in `body` (in the format its `Content-Type` names; JSON without one)
/// to `params`, which holds the path's captures. A key in both is refused (406), as is a
/// content type clnrest does not read. For XML the root element is the method's name.
pub fn body_params(
    params: &mut Map<String, Value>,
    content_type: Option<&str>,
    rpc_method: &str,
    body: &[u8],
) -> Result<(), RestError> {
    let ct = content_type.unwrap_or("application/json");
    let Some(format) = Format::from_header(ct) else {
        return Err(RestError::new(
            406,
            None,
            format!("Unsupported content-type header: {ct}"),
        ));
    };
    if body.is_empty() {
        return Ok(());
    }
    let text = || String::from_utf8_lossy(body);
    let parsed: Map<String, Value> = match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| internal(format!("Could not parse `{}` JSON request: {e}", text())))?,
        Format::Yaml => serde_yaml_ng::from_slice(body)
            .map_err(|e| internal(format!("Could not parse `{}` as YAML request: {e}", text())))?,
        Format::Form => serde_qs::from_bytes(body).map_err(|e| {
            internal(format!(
                "Could not parse `{}` as FORM-URLENCODED request: {e}",
                text()
            ))
        })?,
        Format::Xml => {
            let s = std::str::from_utf8(body)
                .map_err(|e| internal(format!("Could not read `{}` as valid utf8: {e}", text())))?;
            let config = roxmltree_to_serde::Config::new_with_defaults();
            let doc = roxmltree_to_serde::xml_str_to_json(s, &config)
                .map_err(|e| internal(format!("Could not parse `{s}` as XML request: {e}")))?;
            let mut doc = doc;
            match doc.as_object_mut().and_then(|d| d.remove(rpc_method)) {
                Some(Value::Object(o)) => o,
                // `<getinfo/>` or `<getinfo></getinfo>`: no params.
                Some(Value::Null) | Some(Value::String(_)) => Map::new(),
                _ => {
                    return Err(internal(format!(
                        "Use rpc method name as root element: `{rpc_method}`"
                    )));
                }
            }
        }
    };
    for (k, v) in parsed {
        if params.contains_key(&k) {
            return Err(RestError::new(406, None, format!("Duplicate key: {k}")));
        }
        params.insert(k, v);
    }
    Ok(())
}

/// Drops `null` members, at every depth (CLN's clnrest does, so that `"x": null` means
/// "not given").
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        Value::Object(o) => drop_null_members(o),
        _ => {}
    }
}

/// [`drop_nulls`] for an object's members.
pub fn drop_null_members(o: &mut Map<String, Value>) {
    o.retain(|_, v| !v.is_null());
    o.values_mut().for_each(drop_nulls);
}

/// The reply in the format `Accept` asks for (JSON without one): content type and body.
pub fn render(
    accept: Option<&str>,
    rpc_method: &str,
    result: &Value,
) -> Result<(&'static str, Vec<u8>), RestError> {
    let a = accept.unwrap_or("application/json");
    let Some(format) = Format::from_header(a) else {
        return Err(RestError::new(
            406,
            None,
            format!("Unsupported accept header: {a}"),
        ));
    };
    let body = match format {
        Format::Json => serde_json::to_vec(result)
            .map_err(|e| internal(format!("Could not serialize to JSON: {e}")))?,
        Format::Yaml => serde_yaml_ng::to_string(result)
            .map_err(|e| internal(format!("Could not serialize to YAML: {e}")))?
            .into_bytes(),
        Format::Xml => quick_xml::se::to_string_with_root(rpc_method, result)
            .map_err(|e| internal(format!("Could not serialize to XML: {e}")))?
            .into_bytes(),
        Format::Form => serde_qs::to_string(result)
            .map_err(|e| internal(format!("Could not serialize to FORM-URLENCODED: {e}")))?
            .into_bytes(),
    };
    Ok((format.content_type(), body))
}

/// `clnrest-register-path`'s params (by name or by position): the path as given, its
/// HTTP method and its route. Errors are CLN's messages.
pub fn register_path_args(args: &Value) -> Result<(String, Method, Route), String> {
    const NAMES: [&str; 5] = [
        "path",
        "rpc_method",
        "http_method",
        "rune_required",
        "rune_restrictions",
    ];
    let get = |i: usize| -> Option<&Value> {
        match args {
            Value::Array(a) => a.get(i),
            Value::Object(o) => o.get(NAMES[i]),
            _ => None,
        }
        .filter(|v| !v.is_null())
    };
    if !args.is_array() && !args.is_object() {
        return Err("Input arguments must be an array or object".into());
    }
    let path = get(0)
        .ok_or("path is required")?
        .as_str()
        .ok_or("path must be a string")?
        .to_owned();
    let rpc_method = get(1)
        .ok_or("rpc_method is required")?
        .as_str()
        .ok_or("rpc_method must be a string")?
        .to_owned();
    let http_method = match get(2) {
        None => Method::Post,
        Some(v) => {
            let s = v.as_str().ok_or("http_method must be a string")?;
            Method::parse(s).ok_or_else(|| format!("{s} is not a supported http method!"))?
        }
    };
    let rune_required = match get(3) {
        None => true,
        Some(v) => v.as_bool().ok_or("rune_required must be a boolean")?,
    };
    let rune_restrictions = match get(4) {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<RuneCheck>(v.clone())
                .map_err(|e| format!("rune_restrictions: {e}"))?,
        ),
    };
    if http_method != Method::Get && !rune_required {
        return Err("rune_required must be true for anything but GET requests".into());
    }
    Ok((
        path,
        http_method,
        Route {
            rpc_method,
            rune_required,
            rune_restrictions,
        },
    ))
}

/// Adds a registered path to `router`, with CLN's refusals.
pub fn register(
    router: &mut DynRouter,
    path: &str,
    method: Method,
    route: Route,
) -> Result<(), String> {
    if path == "/" {
        return Err("Path must not be root".into());
    }
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Err("Path must not be empty".into());
    }
    if path.contains("{*") {
        return Err("Wildcards not supported".into());
    }
    if let Ok(m) = router.at_mut(path) {
        if m.value.contains_key(&method) {
            return Err(format!(
                "Conflicting path '{path}' already exists with http_method: {}",
                method.as_str()
            ));
        }
        m.value.insert(method, route);
        return Ok(());
    }
    let mut map = HashMap::new();
    map.insert(method, route);
    router.insert(path, map).map_err(|e| e.to_string())
}

/// The body of `/v1/list-methods`: one line per command, as CLN's.
pub fn list_methods(help: &Value) -> String {
    let line = "\n".to_owned() + &"-".repeat(171) + "\n";
    let mut out = String::new();
    for c in help
        .get("help")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = c.get("command").and_then(Value::as_str) {
            out.push_str(&format!("Command: {name}\n{line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &str) -> Route {
        Route {
            rpc_method: m.into(),
            rune_required: true,
            rune_restrictions: None,
        }
    }

    #[test]
    fn v1_paths_name_methods_and_need_post() {
        let r = DynRouter::new();
        let (rt, p) = resolve(&r, "v1/getinfo", Method::Post).unwrap();
        assert_eq!(rt, route("getinfo"));
        assert!(p.is_empty());
        let e = resolve(&r, "v1/getinfo", Method::Get).unwrap_err();
        assert_eq!((e.status, e.code), (405, Some(-32601)));
        assert_eq!(
            e.message,
            "Path invalid, http_method must be POST for CLN methods"
        );
        let e = resolve(&r, "x/v1/getinfo", Method::Post).unwrap_err();
        assert_eq!(e.status, 404);
        assert_eq!(
            resolve(&r, "nothing", Method::Post).unwrap_err().status,
            404
        );
    }

    #[test]
    fn registered_paths_capture_params_and_refuse_conflicts() {
        let mut r = DynRouter::new();
        register(&mut r, "/v2/{capture}/go", Method::Get, route("cap")).unwrap();
        let (rt, p) = resolve(&r, "v2/ct1/go", Method::Get).unwrap();
        assert_eq!(rt.rpc_method, "cap");
        assert_eq!(p["capture"], "ct1");
        let e = resolve(&r, "v2/ct1/go", Method::Post).unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(
            e.message,
            "Dynamic path: v2/ct1/go has no http_method:POST registered"
        );
        let e = register(&mut r, "v2/{capture}/go", Method::Get, route("x")).unwrap_err();
        assert!(e.contains("already exists with http_method: GET"), "{e}");
        register(&mut r, "v2/{capture}/go", Method::Post, route("x")).unwrap();
        assert_eq!(
            register(&mut r, "/", Method::Get, route("x")).unwrap_err(),
            "Path must not be root"
        );
        assert_eq!(
            register(&mut r, "", Method::Get, route("x")).unwrap_err(),
            "Path must not be empty"
        );
        assert_eq!(
            register(&mut r, "/{*w}", Method::Get, route("x")).unwrap_err(),
            "Wildcards not supported"
        );
        // A registered path under v1/ wins over the method of that name.
        register(&mut r, "v1/superpay", Method::Post, route("pay")).unwrap();
        assert_eq!(
            resolve(&r, "v1/superpay", Method::Post)
                .unwrap()
                .0
                .rpc_method,
            "pay"
        );
    }

    #[test]
    fn register_args_by_name_and_position() {
        let (p, m, r) = register_path_args(&json!({"path": "/a", "rpc_method": "b",
            "http_method": "get", "rune_required": false}))
        .unwrap();
        assert_eq!((p.as_str(), m, r.rune_required), ("/a", Method::Get, false));
        let (_, m, r) =
            register_path_args(&json!(["/a", "b", null, null, {"method": "pay"}])).unwrap();
        assert_eq!(m, Method::Post);
        assert_eq!(r.rune_restrictions.unwrap().method.as_deref(), Some("pay"));
        assert_eq!(
            register_path_args(&json!({"path": "/a", "rpc_method": "b", "rune_required": false}))
                .unwrap_err(),
            "rune_required must be true for anything but GET requests"
        );
        assert!(register_path_args(&json!({"rpc_method": "b"})).is_err());
        assert!(register_path_args(&json!(["/a", "b", "TRACE"])).is_err());
    }

    #[test]
    fn bodies_in_every_format() {
        let mut p = Map::new();
        body_params(&mut p, None, "m", br#"{"key": ["a", "b"]}"#).unwrap();
        assert_eq!(p["key"], json!(["a", "b"]));
        let mut p = Map::new();
        body_params(&mut p, Some("application/yaml"), "m", b"key: [a]").unwrap();
        assert_eq!(p["key"], json!(["a"]));
        let mut p = Map::new();
        body_params(
            &mut p,
            Some("application/x-www-form-urlencoded"),
            "m",
            b"amount_msat=5000&label=x",
        )
        .unwrap();
        assert_eq!(p["amount_msat"], "5000");
        let mut p = Map::new();
        body_params(
            &mut p,
            Some("application/xml"),
            "listdatastore",
            b"<listdatastore><key>project</key></listdatastore>",
        )
        .unwrap();
        assert_eq!(p["key"], "project");
        let mut p = Map::new();
        body_params(&mut p, Some("application/xml"), "getinfo", b"<getinfo/>").unwrap();
        assert!(p.is_empty());
        let e = body_params(&mut p, Some("text/plain"), "m", b"x").unwrap_err();
        assert_eq!(e.status, 406);
        let e = body_params(&mut p, None, "m", b"[1]").unwrap_err();
        assert_eq!(e.status, 500);
        let mut p = Map::new();
        p.insert("capture".into(), json!("x"));
        let e = body_params(&mut p, None, "m", br#"{"capture": 1}"#).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (406, "Duplicate key: capture")
        );
    }

    #[test]
    fn replies_in_every_format() {
        let v = json!({"id": "02ab", "datastore": [{"key": ["project"]}]});
        let (ct, b) = render(None, "getinfo", &v).unwrap();
        assert_eq!(ct, "application/json");
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), v);
        let (_, b) = render(Some("application/yaml"), "getinfo", &v).unwrap();
        assert!(String::from_utf8(b).unwrap().contains("id: 02ab"));
        let (_, b) = render(Some("application/xml"), "getinfo", &v).unwrap();
        assert!(String::from_utf8(b).unwrap().contains("<id>02ab</id>"));
        let (_, b) = render(Some("application/x-www-form-urlencoded"), "x", &v).unwrap();
        let s = String::from_utf8(b).unwrap();
        assert!(s.contains("datastore[0][key][0]=project"), "{s}");
        assert_eq!(render(Some("text/html"), "x", &v).unwrap_err().status, 406);
    }

    #[test]
    fn rune_checks_default_to_the_request() {
        let mut params = Map::new();
        params.insert("amount_msat".into(), json!(1));
        let c = route("invoice").rune_check(&params);
        assert_eq!(c.method.as_deref(), Some("invoice"));
        assert_eq!(c.params.as_ref(), Some(&params));
        let r = Route {
            rune_restrictions: Some(RuneCheck {
                method: Some("pay".into()),
                ..Default::default()
            }),
            ..route("superpay")
        };
        assert_eq!(r.rune_check(&params).method.as_deref(), Some("pay"));
        assert_eq!(
            r.rune_check(&params).into_checkrune("R"),
            json!({"rune": "R", "method": "pay", "params": {"amount_msat": 1}})
        );
    }

    #[test]
    fn errors_read_as_clns() {
        let e = RestError::from_rpc(-32601, "Unknown command 'x'".into(), None);
        assert_eq!(e.status, 404);
        assert_eq!(
            e.body(),
            json!({"code": -32601, "message": "Unknown command 'x'"})
        );
        let e = RestError::new(401, Some(1501), "Not authorized: Not derived from master");
        assert_eq!(
            e.to_string(),
            "Unauthorized: Error code 1501: Not authorized: Not derived from master"
        );
        let mut v = json!({"a": null, "b": [{"c": null, "d": 1}]});
        drop_nulls(&mut v);
        assert_eq!(v, json!({"b": [{"d": 1}]}));
    }
}
