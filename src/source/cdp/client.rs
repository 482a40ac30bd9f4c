//! The DevTools connection of one CDP source session: chromiumoxide's `Connection` driven by
//! one task, calls answered by id, events handed on with their flattened `sessionId`, and the
//! liveness probe of a silent browser.
//! Must not choose pages or publish frames: the session does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::GetVersionParams;
use chromiumoxide::cdp::browser_protocol::target::SessionId;
use chromiumoxide::error::CdpError;
use chromiumoxide::types::{CallId, Command, EventMessage, Message, Method, MethodId};
use chromiumoxide::Connection;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::input::CdpCommand;
use crate::sync::lock;

/// One CDP event as received: chromiumoxide's generic event type does not read the message's
/// top-level `sessionId` (which flattened sessions rely on), so this one does.
#[derive(Debug, serde::Deserialize)]
pub(super) struct CdpEvent {
    pub(super) method: MethodId,
    #[serde(rename = "sessionId")]
    pub(super) session_id: Option<String>,
    #[serde(default)]
    pub(super) params: Value,
}

impl Method for CdpEvent {
    fn identifier(&self) -> MethodId {
        self.method.clone()
    }
}

impl EventMessage for CdpEvent {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

pub(super) struct Call {
    pub(super) method: Cow<'static, str>,
    pub(super) session: Option<String>,
    pub(super) params: Value,
    pub(super) reply: Option<oneshot::Sender<Result<Value, String>>>,
}

/// A DevTools connection driven by its own task: calls with replies, and a stream of events.
/// Dropping the client ends the connection.
#[derive(Clone)]
pub(super) struct CdpClient {
    pub(super) calls: mpsc::UnboundedSender<Call>,
    /// How long a call may take.
    pub(super) timeout: Duration,
    /// When the browser last sent anything (answer or event).
    pub(super) last_heard: Arc<Mutex<Instant>>,
}

impl CdpClient {
    pub(super) async fn connect(
        endpoint: &str,
        timeout: Duration,
    ) -> Result<(CdpClient, mpsc::UnboundedReceiver<CdpEvent>), String> {
        let connection = tokio::time::timeout(timeout, Connection::<CdpEvent>::connect(endpoint))
            .await
            .map_err(|_| format!("no answer from {endpoint} within {timeout:?}"))?
            .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let last_heard = Arc::new(Mutex::new(Instant::now()));
        tokio::spawn(drive(connection, calls_rx, events, last_heard.clone()));
        let client = CdpClient {
            calls,
            timeout,
            last_heard,
        };
        Ok((client, events_rx))
    }

    /// How long the browser has been silent.
    pub(super) fn silent_for(&self) -> Duration {
        lock(&self.last_heard).elapsed()
    }

    /// Asks the browser something cheap and waits up to `timeout` for any answer: an error
    /// answer proves it alive too. Err only when it does not answer or the connection closed.
    pub(super) async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                method: Cow::Borrowed(GetVersionParams::IDENTIFIER),
                session: None,
                params: json!({}),
                reply: Some(reply),
            })
            .map_err(|_| "the DevTools connection is closed".to_string())?;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(_)) => Err("the DevTools connection is closed".to_string()),
            Ok(Ok(_answered)) => Ok(()),
        }
    }

    /// Sends a call without waiting for its answer (screencast acks).
    /// Sends `command` without waiting for its answer (a screencast ack).
    pub(super) fn send<C: Command>(&self, session: Option<&str>, command: &C) {
        let Ok(params) = serde_json::to_value(command) else {
            return;
        };
        let _ = self.calls.send(Call {
            method: command.identifier(),
            session: session.map(str::to_string),
            params,
            reply: None,
        });
    }

    pub(super) async fn call(
        &self,
        method: Cow<'static, str>,
        session: Option<&str>,
        params: Value,
    ) -> Result<Value, String> {
        let (reply, answer) = oneshot::channel();
        let label = method.clone();
        self.calls
            .send(Call {
                method,
                session: session.map(str::to_string),
                params,
                reply: Some(reply),
            })
            .map_err(|_| "the DevTools connection is closed".to_string())?;
        match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(format!("{label}: no answer within {:?}", self.timeout)),
            Ok(Err(_)) => Err("the DevTools connection is closed".to_string()),
            Ok(Ok(result)) => result.map_err(|e| format!("{label}: {e}")),
        }
    }

    pub(super) async fn command<C: Command>(
        &self,
        session: Option<&str>,
        command: C,
    ) -> Result<C::Response, String> {
        let method = command.identifier();
        let params = serde_json::to_value(&command).map_err(|e| e.to_string())?;
        let result = self.call(method.clone(), session, params).await?;
        C::response_from_value(result).map_err(|e| format!("{method}: unexpected answer: {e}"))
    }

    pub(super) async fn run(
        &self,
        session: Option<&str>,
        command: CdpCommand,
    ) -> Result<Value, String> {
        self.call(Cow::Borrowed(command.method), session, command.params)
            .await
    }
}

/// Moves calls to the socket and answers and events back until either side is gone.
pub(super) async fn drive(
    mut connection: Connection<CdpEvent>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    events: mpsc::UnboundedSender<CdpEvent>,
    last_heard: Arc<Mutex<Instant>>,
) {
    let mut pending: HashMap<CallId, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { return };
                let session = call.session.map(SessionId::new);
                match connection.submit_command(call.method, session, call.params) {
                    Ok(id) => {
                        if let Some(reply) = call.reply {
                            pending.insert(id, reply);
                        }
                    }
                    Err(e) => {
                        if let Some(reply) = call.reply {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
            message = connection.next() => {
                if message.is_some() {
                    *lock(&last_heard) = Instant::now();
                }
                match message {
                Some(Ok(Message::Response(response))) => {
                    if let Some(reply) = pending.remove(&response.id) {
                        let result = match (response.result, response.error) {
                            (_, Some(error)) => Err(format!("{} ({})", error.message, error.code)),
                            (result, None) => Ok(result.unwrap_or(Value::Null)),
                        };
                        let _ = reply.send(result);
                    }
                }
                Some(Ok(Message::Event(event))) => {
                    if events.send(event).is_err() {
                        return;
                    }
                }
                // A message this client cannot read (a newer protocol): skip it.
                Some(Err(CdpError::InvalidMessage(..))) | Some(Err(CdpError::Serde(_))) => {}
                Some(Err(_)) | None => return,
                }
            }
        }
    }
}
