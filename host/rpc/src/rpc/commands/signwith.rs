//! `signmessagewithkey message address` (a BIP137 signature by the key of one of the
//! wallet's P2WPKH addresses, as CLN's) and `signinvoice invstring` (a BOLT 11 invoice
//! signed again with the node key, not stored, as CLN's).

use std::str::FromStr;

use bitcoin::base64::Engine as _;
use fulgur_protocol::RpcError;
use lightning_invoice::SignedRawBolt11Invoice;
use serde_json::json;

use super::pay::engine;
use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};
use crate::wallet::MessageKeyError;
use fulgur_base::hex;

pub const SIGNMESSAGEWITHKEY: Command = Command::new(
    "signmessagewithkey",
    &[req("message"), req("address")],
    run_with_key,
);

pub const SIGNINVOICE: Command = Command::new("signinvoice", &[req("invstring")], run_invoice);

fn run_with_key(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let message = p.str("message")?;
        let address = p.str("address")?;
        let wallet = ctx.node.wallet.clone();
        let addr = crate::rpc::onchain::address("address", &address, wallet.network())?;
        let (pubkey, sig) = wallet
            .sign_message_with_key(&addr.script_pubkey(), &message)
            .map_err(|e| {
                RpcError::invalid_params(match e {
                    MessageKeyError::NotP2wpkh => {
                        "Address is not p2wpkh and it is not supported for signing"
                    }
                    MessageKeyError::NotOurs => "Address is not found in the wallet's database",
                })
            })?;
        Ok(json!({
            "address": addr.to_string(),
            "pubkey": pubkey.to_string(),
            "signature": hex(&sig),
            "base64": bitcoin::base64::engine::general_purpose::STANDARD.encode(sig),
        }))
    })
}

fn run_invoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let s = p.str("invstring")?;
        let unparsable =
            |why: String| RpcError::invalid_params(format!("Unparsable invoice '{s}': {why}"));
        let signed =
            SignedRawBolt11Invoice::from_str(s.trim()).map_err(|e| unparsable(e.to_string()))?;
        let (mut raw, _, _) = signed.into_parts();
        let d = raw.data.tagged_fields.iter().any(|f| {
            matches!(
                f,
                lightning_invoice::RawTaggedField::KnownSemantics(
                    lightning_invoice::TaggedField::Description(_)
                        | lightning_invoice::TaggedField::DescriptionHash(_)
                )
            )
        });
        if !d {
            return Err(RpcError::invalid_params("Missing description in invoice"));
        }
        let l = engine(&ctx.node)?;
        let key = l.node_secret_key();
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        // An explicit payee (`n`) names the signer: it becomes us.
        let me = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &key);
        for f in raw.data.tagged_fields.iter_mut() {
            if let lightning_invoice::RawTaggedField::KnownSemantics(
                lightning_invoice::TaggedField::PayeePubKey(p),
            ) = f
            {
                *p = lightning_invoice::PayeePubKey(me);
            }
        }
        let resigned = raw
            .sign::<_, ()>(|hash| Ok(secp.sign_ecdsa_recoverable(hash, &key)))
            .map_err(|()| RpcError::lightningd("cannot sign the invoice"))?;
        Ok(json!({ "bolt11": resigned.to_string() }))
    })
}
