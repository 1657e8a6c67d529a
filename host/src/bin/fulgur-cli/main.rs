//! `fulgur-cli`: send one JSON-RPC command to fulgurd over its UNIX socket and print the
//! answer. Options, parameter handling, output formats and exit codes follow CLN's
//! `lightning-cli`, so scripts written for it work with this one.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod args;
mod config;
mod output;
mod params;
mod rpc;

use std::io::{self, BufWriter, Write};

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use fulgur_protocol::Request;
use fulgur_protocol::error::codes;
use serde_json::{Map, Value};

use args::{Cli, Format};
use rpc::{ConnectError, Connection, Frame};

/// Success.
const EXIT_OK: i32 = 0;
/// fulgurd answered with an error.
const EXIT_NODE_ERROR: i32 = 1;
/// fulgurd could not be reached or answered nonsense.
const EXIT_TALKING: i32 = 2;
/// The command line is wrong.
const EXIT_USAGE: i32 = 3;

/// Why the command could not be carried out.
#[derive(Debug)]
pub enum CliError {
    /// Bad options or parameters (exit 3).
    Usage(String),
    /// No conversation with the node (exit 2).
    Talk(String),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Talk(_) => EXIT_TALKING,
        }
    }
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            let (CliError::Usage(msg) | CliError::Talk(msg)) = &e;
            let _ = writeln!(io::stderr(), "fulgur-cli: {msg}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run() -> Result<i32, CliError> {
    let mut command = Cli::command();
    let matches = match command.try_get_matches_from_mut(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => {
            return Ok(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = write!(io::stdout(), "{e}");
                    EXIT_OK
                }
                _ => {
                    let _ = write!(io::stderr(), "{e}");
                    EXIT_USAGE
                }
            });
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| CliError::Usage(e.to_string()))?;

    let threshold = args::notification_threshold(&cli.notifications).map_err(CliError::Usage)?;
    let filter = match &cli.filter {
        Some(f) => Some(
            serde_json::from_str::<Value>(f)
                .map_err(|e| CliError::Usage(format!("--filter is not valid JSON: {e}")))?,
        ),
        None => None,
    };

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());

    let method = match &cli.method {
        Some(m) => m.clone(),
        None => {
            let _ = write!(out, "{}", command.render_help());
            let _ = write!(
                out,
                "\nQuerying fulgurd for available RPC commands (\"fulgur-cli help\"):\n\n"
            );
            let _ = out.flush();
            "help".to_string()
        }
    };
    let params = params::build(cli.input(), &cli.params)?;

    let location = config::resolve(&config::Overrides {
        lightning_dir: cli.lightning_dir.clone(),
        network: cli.network(),
        conf: cli.conf.clone(),
        rpc_file: cli.rpc_file.clone(),
    })?;
    let stream = rpc::connect(&location.socket).map_err(|e| match e {
        ConnectError::TooLong => CliError::Usage(format!(
            "rpc file name '{}' is too long for a UNIX socket",
            location.socket.display()
        )),
        ConnectError::Io(err) => CliError::Talk(format!(
            "cannot connect to fulgurd at {}: {err}. Is fulgurd running (with --lightning-dir {} --network {})?",
            location.socket.display(),
            location.lightning_dir.display(),
            location.network
        )),
    })?;
    let mut conn = Connection::new(stream);

    let pid = std::process::id();
    let id = if needs_escape(&method) {
        format!("cli:weirdmethod!#{pid}")
    } else {
        format!("cli:{method}#{pid}")
    };

    if threshold.is_some() {
        enable_notifications(&mut conn, pid)?;
    }

    let mut request = Request::new(id.clone(), method.clone(), params);
    if let Some(filter) = filter {
        request.extra.insert("filter".into(), filter);
    }
    conn.send(&request.to_value())?;

    let frame = loop {
        let frame = conn.next_frame()?;
        if is_notification(&frame.value) {
            handle_notification(&frame.value, threshold);
            continue;
        }
        break frame;
    };

    let code = print_reply(&mut out, &cli, &method, &id, frame)?;
    let _ = out.flush();
    Ok(code)
}

/// Whether a method name would need JSON escaping (then it stays out of our id).
fn needs_escape(s: &str) -> bool {
    s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

fn is_notification(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| !o.contains_key("id") && o.contains_key("method"))
}

/// Asks the node to send `message` and `progress` notifications about our request. A node
/// without the `notifications` command is fine: we just get none.
fn enable_notifications(conn: &mut Connection, pid: u32) -> Result<(), CliError> {
    let id = format!("cli:notifications#{pid}");
    let mut params = Map::new();
    params.insert("enable".into(), Value::Bool(true));
    let request = Request::new(id.clone(), "notifications", Value::Object(params));
    conn.send(&request.to_value())?;
    loop {
        let frame = conn.next_frame()?;
        if is_notification(&frame.value) {
            continue;
        }
        check_id(&frame, &id)?;
        match frame.value.get("error") {
            None | Some(Value::Null) => return Ok(()),
            Some(err) => {
                if err.get("code").and_then(Value::as_i64) != Some(codes::METHOD_NOT_FOUND) {
                    let _ = writeln!(
                        io::stderr(),
                        "fulgur-cli: warning: could not enable notifications: {err}"
                    );
                }
                return Ok(());
            }
        }
    }
}

/// Prints a `message` notification at or above the threshold as `# <message>`, and
/// `progress` as `# [n/N]`, on stderr.
fn handle_notification(v: &Value, threshold: Option<usize>) {
    let Some(threshold) = threshold else {
        return;
    };
    let params = v.get("params").unwrap_or(&Value::Null);
    let mut err = io::stderr().lock();
    match v.get("method").and_then(Value::as_str) {
        Some("message") => {
            let level = params
                .get("level")
                .and_then(Value::as_str)
                .and_then(args::parse_level);
            let message = params.get("message").and_then(Value::as_str);
            if let (Some(level), Some(message)) = (level, message)
                && level >= threshold
            {
                let _ = writeln!(err, "# {message}");
            }
        }
        Some("progress") => {
            let num = params.get("num").and_then(Value::as_u64);
            let total = params.get("total").and_then(Value::as_u64);
            if let (Some(num), Some(total)) = (num, total) {
                let stage = params
                    .get("stage")
                    .and_then(|s| Some((s.get("num")?.as_u64()?, s.get("total")?.as_u64()?)));
                let line = match stage {
                    Some((s, st)) => format!(
                        "# [stage {}/{st}] [{}/{total}]",
                        s.saturating_add(1),
                        num.saturating_add(1)
                    ),
                    None => format!("# [{}/{total}]", num.saturating_add(1)),
                };
                let _ = writeln!(err, "{line}");
            }
        }
        _ => {}
    }
}

/// The reply must carry our id, as a string.
fn check_id(frame: &Frame, id: &str) -> Result<(), CliError> {
    let Some(obj) = frame.value.as_object() else {
        return Err(CliError::Talk(format!(
            "non-object reply from fulgurd: '{}'",
            String::from_utf8_lossy(&frame.text)
        )));
    };
    match obj.get("id") {
        Some(Value::String(s)) if s == id => Ok(()),
        Some(other) => Err(CliError::Talk(format!(
            "incorrect 'id' {other} in reply from fulgurd (expected \"{id}\")"
        ))),
        None => Err(CliError::Talk("missing 'id' in reply from fulgurd".into())),
    }
}

/// The raw text of a top-level member of the reply, for `-R`.
fn raw_member(text: &[u8], key: &str, parsed: &Value) -> String {
    match output::member_span(text, key) {
        Some(span) => String::from_utf8_lossy(&text[span]).into_owned(),
        None => parsed.to_string(),
    }
}

/// Removes `format-hint` from an object result, telling whether it asked for `simple`.
fn take_format_hint(result: &mut Value) -> bool {
    match result
        .as_object_mut()
        .and_then(|o| o.shift_remove("format-hint"))
    {
        Some(Value::String(s)) => s == "simple",
        _ => false,
    }
}

fn print_reply(
    out: &mut impl Write,
    cli: &Cli,
    method: &str,
    id: &str,
    frame: Frame,
) -> Result<i32, CliError> {
    check_id(&frame, id)?;
    let format = cli.format();
    let Frame { value, text } = frame;
    let Value::Object(mut obj) = value else {
        return Err(CliError::Talk("non-object reply from fulgurd".into()));
    };
    if let Some(error) = obj.remove("error").filter(|e| !e.is_null()) {
        let res = if format == Format::Raw {
            writeln!(out, "{}", raw_member(&text, "error", &error))
        } else {
            output::write_json(out, &error)
        };
        let _ = res;
        return Ok(EXIT_NODE_ERROR);
    }
    let Some(mut result) = obj.remove("result") else {
        return Err(CliError::Talk(format!(
            "reply from fulgurd has neither 'result' nor 'error': '{}'",
            String::from_utf8_lossy(&text[..text.len().min(500)])
        )));
    };

    let is_help = method == "help";
    let res = match format {
        Format::Raw => writeln!(out, "{}", raw_member(&text, "result", &result)),
        Format::Json => output::write_json(out, &result),
        Format::Flat => output::write_flat(out, &result),
        Format::Human => {
            take_format_hint(&mut result);
            output::write_human(out, &result)
        }
        Format::Default if is_help && cli.params.is_empty() => {
            match output::write_help_list(out, &result) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    take_format_hint(&mut result);
                    output::write_human(out, &result)
                }
                Err(e) => Err(e),
            }
        }
        Format::Default => {
            let simple = take_format_hint(&mut result);
            if simple || is_help {
                output::write_human(out, &result)
            } else {
                output::write_json(out, &result)
            }
        }
    };
    // A closed stdout (`| head`) is not an error of ours.
    let _ = res;
    Ok(EXIT_OK)
}
