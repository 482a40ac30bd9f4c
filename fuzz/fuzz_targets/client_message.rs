//! `protocol::parse_client_message` (compat) and `protocol::parse_extended_message` on the text
//! of a client's WebSocket message (non-UTF-8 input is made UTF-8 lossily, as the decoder only
//! ever hands valid UTF-8 over).
//!
//! Invariants (docs/PROTOCOL.md, "Client → server"):
//! - never panics;
//! - an accepted mouse message has a known event type and button, x/y finite and ≥ 0, finite
//!   deltas, modifiers ≤ 15, clickCount ≤ 16;
//! - an accepted keyboard message has a known event type, key/code ≤ 64 bytes, text ≤ 1024
//!   bytes, modifiers ≤ 15; an accepted text insert is 1..=1024 bytes;
//! - an accepted `config` has maxFps in (0, 240] (and within `MIN_FPS..=MAX_FPS`);
//! - compat and extended agree: a message the compat parser accepts is the extended parser's
//!   compat input (`frame_pixels: false`, no frame seq), and a message it refuses for any reason
//!   other than its type is refused identically by the extended parser;
//! - an accepted input turns into a CDP command (`input::*_command`) without panicking, and
//!   that command serializes to JSON.
#![no_main]

use browser_stream_native::fuzzing::{insert_text_command, keyboard_command, mouse_command};
use browser_stream_native::protocol::{
    parse_client_message, parse_extended_message, ClientMessage, ExtendedMessage, KeyboardInput,
    MessageError, MouseInput, MAX_FPS, MIN_FPS,
};
use libfuzzer_sys::fuzz_target;

fn check_mouse(m: &MouseInput) {
    assert!(
        matches!(
            m.event_type,
            "mousePressed" | "mouseReleased" | "mouseMoved" | "mouseWheel"
        ),
        "{m:?}"
    );
    assert!(m.x.is_finite() && m.x >= 0.0, "{m:?}");
    assert!(m.y.is_finite() && m.y >= 0.0, "{m:?}");
    if let Some(button) = m.button {
        assert!(
            matches!(
                button,
                "none" | "left" | "middle" | "right" | "back" | "forward"
            ),
            "{m:?}"
        );
    }
    assert!(m.click_count.is_none_or(|c| c <= 16), "{m:?}");
    assert!(m.modifiers.is_none_or(|c| c <= 15), "{m:?}");
    assert!(m.delta_x.is_none_or(f64::is_finite), "{m:?}");
    assert!(m.delta_y.is_none_or(f64::is_finite), "{m:?}");
    let command = mouse_command(m);
    assert_eq!(command.method, "Input.dispatchMouseEvent");
    serde_json::to_string(&command.params).expect("mouse command serializes");
    serde_json::to_string(m).expect("mouse input serializes");
}

fn check_keyboard(k: &KeyboardInput) {
    assert!(
        matches!(k.event_type, "keyDown" | "keyUp" | "char"),
        "{k:?}"
    );
    assert!(k.key.as_ref().is_none_or(|s| s.len() <= 64), "{k:?}");
    assert!(k.code.as_ref().is_none_or(|s| s.len() <= 64), "{k:?}");
    assert!(k.text.as_ref().is_none_or(|s| s.len() <= 1024), "{k:?}");
    assert!(k.modifiers.is_none_or(|c| c <= 15), "{k:?}");
    let command = keyboard_command(k);
    assert_eq!(command.method, "Input.dispatchKeyEvent");
    serde_json::to_string(&command.params).expect("keyboard command serializes");
    serde_json::to_string(k).expect("keyboard input serializes");
}

fn check_input(input: &ClientMessage) {
    match input {
        ClientMessage::Mouse(m) => check_mouse(m),
        ClientMessage::Keyboard(k) => check_keyboard(k),
        ClientMessage::InsertText(text) => {
            assert!(
                !text.is_empty() && text.len() <= 1024,
                "text of {}",
                text.len()
            );
            serde_json::to_string(&insert_text_command(text).params).expect("serializes");
        }
        ClientMessage::Relaunch => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;

    let compat = parse_client_message(text);
    if let Ok(message) = &compat {
        assert!(
            !matches!(message, ClientMessage::InsertText(_)),
            "compat has no text insert"
        );
        check_input(message);
    }
    if let Err(MessageError::UnknownType(kind)) = &compat {
        assert!(kind.chars().count() <= 64, "unknown type echoed unbounded");
    }

    let extended = parse_extended_message(text);
    match &extended {
        Ok(ExtendedMessage::Input {
            input,
            frame_pixels,
            frame_seq,
        }) => {
            check_input(input);
            if !frame_pixels {
                assert!(frame_seq.is_none());
                assert!(!matches!(input, ClientMessage::InsertText(_)));
            }
        }
        Ok(ExtendedMessage::Config {
            max_fps: Some(Some(fps)),
            ..
        }) => {
            assert!(*fps > 0.0 && *fps <= 240.0, "maxFps {fps}");
            assert!((MIN_FPS..=MAX_FPS).contains(fps), "maxFps {fps}");
        }
        Ok(_) => {}
        Err(MessageError::UnknownType(kind)) => {
            assert!(kind.chars().count() <= 64, "unknown type echoed unbounded")
        }
        Err(_) => {}
    }

    // The compat messages parse the same in both modes.
    match (&compat, &extended) {
        (
            Ok(message),
            Ok(ExtendedMessage::Input {
                input,
                frame_pixels: false,
                frame_seq: None,
            }),
        ) => assert_eq!(message, input),
        (Ok(message), other) => {
            panic!("compat accepted {message:?} but extended gave {other:?}")
        }
        (Err(MessageError::UnknownType(_)), _) => {}
        (Err(error), Err(other)) => assert_eq!(error, other),
        (Err(error), Ok(other)) => {
            panic!("compat refused ({error:?}) but extended accepted {other:?}")
        }
    }
});
