//! CLN's `cln-grpc` plugin (the crates.io `cln-grpc-plugin` binary, unmodified) run by
//! fulgurd, and called with the client `cln-grpc` generates from the same proto: the test in
//! `tests/grpc.rs` calls every typed call of the proto and subscribes to every notification
//! stream. The plugin turns each call into a JSON-RPC request to fulgurd and parses the reply
//! with `cln-rpc`'s strict models, so a reply whose shape differs from CLN's comes back as an
//! error that says "Failed to deserialize".
//!
//! This crate holds what the test checks against: the proto's calls with the CLN command
//! each one sends ([`CALLS`], taken from `cln-grpc` 0.7.0's `server.rs`), its streams
//! ([`STREAMS`]) and how a reply is classified ([`classify`]).

/// Every typed call of `cln-grpc` 0.7.0's `Node` service: (client method, CLN command it sends).
pub const CALLS: &[(&str, &str)] = &[
    ("getinfo", "getinfo"),
    ("list_peers", "listpeers"),
    ("list_funds", "listfunds"),
    ("send_pay", "sendpay"),
    ("list_channels", "listchannels"),
    ("add_gossip", "addgossip"),
    ("add_psbt_output", "addpsbtoutput"),
    ("auto_clean_once", "autoclean-once"),
    ("auto_clean_status", "autoclean-status"),
    ("check_message", "checkmessage"),
    ("close", "close"),
    ("connect_peer", "connect"),
    ("create_invoice", "createinvoice"),
    ("datastore", "datastore"),
    ("datastore_usage", "datastoreusage"),
    ("create_onion", "createonion"),
    ("del_datastore", "deldatastore"),
    ("del_invoice", "delinvoice"),
    ("dev_forget_channel", "dev-forget-channel"),
    ("emergency_recover", "emergencyrecover"),
    ("get_emergency_recover_data", "getemergencyrecoverdata"),
    ("expose_secret", "exposesecret"),
    ("recover", "recover"),
    ("recover_channel", "recoverchannel"),
    ("invoice", "invoice"),
    ("create_invoice_request", "invoicerequest"),
    ("disable_invoice_request", "disableinvoicerequest"),
    ("list_invoice_requests", "listinvoicerequests"),
    ("list_datastore", "listdatastore"),
    ("list_invoices", "listinvoices"),
    ("send_onion", "sendonion"),
    ("list_send_pays", "listsendpays"),
    ("list_transactions", "listtransactions"),
    ("make_secret", "makesecret"),
    ("pay", "pay"),
    ("list_nodes", "listnodes"),
    ("wait_any_invoice", "waitanyinvoice"),
    ("wait_invoice", "waitinvoice"),
    ("wait_send_pay", "waitsendpay"),
    ("new_addr", "newaddr"),
    ("withdraw", "withdraw"),
    ("key_send", "keysend"),
    ("fund_psbt", "fundpsbt"),
    ("send_psbt", "sendpsbt"),
    ("sign_psbt", "signpsbt"),
    ("utxo_psbt", "utxopsbt"),
    ("tx_discard", "txdiscard"),
    ("tx_prepare", "txprepare"),
    ("tx_send", "txsend"),
    ("list_peer_channels", "listpeerchannels"),
    ("list_closed_channels", "listclosedchannels"),
    ("decode", "decode"),
    ("del_pay", "delpay"),
    ("del_forward", "delforward"),
    ("disable_offer", "disableoffer"),
    ("enable_offer", "enableoffer"),
    ("disconnect", "disconnect"),
    ("feerates", "feerates"),
    ("fetch_bip353", "fetchbip353"),
    ("fetch_invoice", "fetchinvoice"),
    ("cancel_recurring_invoice", "cancelrecurringinvoice"),
    ("fund_channel_cancel", "fundchannel_cancel"),
    ("fund_channel_complete", "fundchannel_complete"),
    ("fund_channel", "fundchannel"),
    ("fund_channel_start", "fundchannel_start"),
    ("get_log", "getlog"),
    ("funder_update", "funderupdate"),
    ("get_route", "getroute"),
    ("list_addresses", "listaddresses"),
    ("list_forwards", "listforwards"),
    ("list_offers", "listoffers"),
    ("list_pays", "listpays"),
    ("list_htlcs", "listhtlcs"),
    ("multi_fund_channel", "multifundchannel"),
    ("multi_withdraw", "multiwithdraw"),
    ("offer", "offer"),
    ("open_channel_abort", "openchannel_abort"),
    ("open_channel_bump", "openchannel_bump"),
    ("open_channel_init", "openchannel_init"),
    ("open_channel_signed", "openchannel_signed"),
    ("open_channel_update", "openchannel_update"),
    ("ping", "ping"),
    ("plugin", "plugin"),
    ("rene_pay_status", "renepaystatus"),
    ("rene_pay", "renepay"),
    ("reserve_inputs", "reserveinputs"),
    ("send_custom_msg", "sendcustommsg"),
    ("send_invoice", "sendinvoice"),
    ("set_channel", "setchannel"),
    ("set_config", "setconfig"),
    ("set_psbt_version", "setpsbtversion"),
    ("sign_invoice", "signinvoice"),
    ("sign_message", "signmessage"),
    ("splice_init", "splice_init"),
    ("splice_signed", "splice_signed"),
    ("splice_update", "splice_update"),
    ("splice_in", "splicein"),
    ("splice_out", "spliceout"),
    ("dev_splice", "dev-splice"),
    ("unreserve_inputs", "unreserveinputs"),
    ("upgrade_wallet", "upgradewallet"),
    ("wait_block_height", "waitblockheight"),
    ("wait", "wait"),
    ("list_configs", "listconfigs"),
    ("stop", "stop"),
    ("help", "help"),
    ("pre_approve_keysend", "preapprovekeysend"),
    ("pre_approve_invoice", "preapproveinvoice"),
    ("static_backup", "staticbackup"),
    ("bkpr_channels_apy", "bkpr-channelsapy"),
    ("bkpr_dump_income_csv", "bkpr-dumpincomecsv"),
    ("bkpr_inspect", "bkpr-inspect"),
    ("bkpr_list_account_events", "bkpr-listaccountevents"),
    ("bkpr_list_balances", "bkpr-listbalances"),
    ("bkpr_list_income", "bkpr-listincome"),
    (
        "bkpr_edit_description_by_payment_id",
        "bkpr-editdescriptionbypaymentid",
    ),
    (
        "bkpr_edit_description_by_outpoint",
        "bkpr-editdescriptionbyoutpoint",
    ),
    ("bkpr_report", "bkpr-report"),
    ("blacklist_rune", "blacklistrune"),
    ("check_rune", "checkrune"),
    ("create_rune", "createrune"),
    ("show_runes", "showrunes"),
    ("ask_rene_unreserve", "askrene-unreserve"),
    ("ask_rene_list_layers", "askrene-listlayers"),
    ("ask_rene_create_layer", "askrene-create-layer"),
    ("ask_rene_remove_layer", "askrene-remove-layer"),
    (
        "ask_rene_remove_channel_update",
        "askrene-remove-channel-update",
    ),
    ("ask_rene_reserve", "askrene-reserve"),
    ("ask_rene_age", "askrene-age"),
    ("get_routes", "getroutes"),
    ("ask_rene_disable_node", "askrene-disable-node"),
    ("ask_rene_inform_channel", "askrene-inform-channel"),
    ("ask_rene_create_channel", "askrene-create-channel"),
    ("ask_rene_update_channel", "askrene-update-channel"),
    ("ask_rene_bias_channel", "askrene-bias-channel"),
    ("askrene_bias_node", "askrene-bias-node"),
    ("ask_rene_list_reservations", "askrene-listreservations"),
    ("inject_payment_onion", "injectpaymentonion"),
    ("inject_onion_message", "injectonionmessage"),
    ("xpay", "xpay"),
    ("sign_message_with_key", "signmessagewithkey"),
    ("list_channel_moves", "listchannelmoves"),
    ("list_chain_moves", "listchainmoves"),
    ("list_network_events", "listnetworkevents"),
    ("del_network_event", "delnetworkevent"),
    ("clnrest_register_path", "clnrest-register-path"),
    ("list_currency_rates", "listcurrencyrates"),
    ("currency_convert", "currencyconvert"),
    ("currency_rate", "currencyrate"),
    ("send_amount", "sendamount"),
    ("create_proof", "createproof"),
    ("xkeysend", "xkeysend"),
    ("graceful", "graceful"),
];

/// Every notification stream of `cln-grpc` 0.7.0's `Node` service (client methods).
pub const STREAMS: &[&str] = &[
    "subscribe_balance_snapshot",
    "subscribe_block_added",
    "subscribe_channel_open_failed",
    "subscribe_channel_opened",
    "subscribe_channel_state_changed",
    "subscribe_connect",
    "subscribe_coin_movement",
    "subscribe_custom_msg",
    "subscribe_deprecated_oneshot",
    "subscribe_disconnect",
    "subscribe_forward_event",
    "subscribe_invoice_creation",
    "subscribe_invoice_payment",
    "subscribe_log",
    "subscribe_onion_message_forward_fail",
    "subscribe_open_channel_peer_sigs",
    "subscribe_plugin_started",
    "subscribe_plugin_stopped",
    "subscribe_send_pay_failure",
    "subscribe_send_pay_success",
    "subscribe_shutdown",
    "subscribe_warning",
    "subscribe_pay_part_end",
    "subscribe_pay_part_start",
];

/// What became of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reply parsed in cln-rpc's model and came back as the typed response.
    Ok,
    /// fulgurd answered "unknown command" (JSON-RPC code -32601).
    UnknownCommand,
    /// fulgurd answered, but the plugin could not parse the reply with cln-rpc's model: a
    /// shape that differs from CLN's. Always a bug in Fulgur.
    ShapeMismatch(String),
    /// fulgurd answered with another JSON-RPC error (the message says which).
    RpcError(String),
    /// No answer from the plugin (connection lost, plugin crashed, or another gRPC failure).
    Transport(String),
}

/// Classifies the status message of a failed call, as the plugin words it: "Error calling
/// method X: RpcError { code: Some(C), message: ... }".
pub fn classify(message: &str) -> Outcome {
    if message.contains("Failed to deserialize") {
        Outcome::ShapeMismatch(message.to_string())
    } else if message.contains("code: Some(-32601)") {
        Outcome::UnknownCommand
    } else if message.contains("Error calling method") {
        Outcome::RpcError(message.to_string())
    } else {
        Outcome::Transport(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{CALLS, Outcome, STREAMS, classify};

    #[test]
    fn the_tables_cover_the_proto() {
        assert_eq!(CALLS.len(), 153);
        assert_eq!(STREAMS.len(), 24);
        let mut names: Vec<_> = CALLS.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CALLS.len());
    }

    #[test]
    fn statuses_are_classified_as_the_plugin_words_them() {
        let unknown = "Error calling method Offer: RpcError { code: Some(-32601), message: \"Unknown command 'offer'\", data: None }";
        assert_eq!(classify(unknown), Outcome::UnknownCommand);
        let shape = "Error calling method Getinfo: RpcError { code: None, message: \"Failed to deserialize response : missing field `id`\", data: None }";
        assert!(matches!(classify(shape), Outcome::ShapeMismatch(_)));
        let rpc = "Error calling method Connect: RpcError { code: Some(401), message: \"no address\", data: None }";
        assert!(matches!(classify(rpc), Outcome::RpcError(_)));
        assert!(matches!(classify("transport error"), Outcome::Transport(_)));
    }
}
