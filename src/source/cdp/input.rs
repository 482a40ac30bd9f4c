//! Input relay to the page: turns a viewer's validated mouse and keyboard messages into the CDP
//! `Input.dispatchMouseEvent` / `Input.dispatchKeyEvent` commands the native source sends.
//!
//! Owns: that mapping, including what Chrome needs beyond Studio's fields to act on special
//! keys (the Windows virtual key code, the text of Enter). Must not touch sockets, the
//! registry or the CDP connection: it only builds commands.

use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::types::Method;
use serde::Serialize;
use serde_json::Value;

use crate::protocol::{KeyboardInput, MouseInput};

/// One CDP command: method name and parameters, from chromiumoxide's typed commands.
#[derive(Debug, Clone, PartialEq)]
pub struct CdpCommand {
    /// The method, e.g. `Input.dispatchMouseEvent`.
    pub method: &'static str,
    /// Its parameters.
    pub params: Value,
}

impl CdpCommand {
    /// The command `params` stands for (its method from the typed command itself).
    fn of<C: Method + Serialize>(method: &'static str, params: &C) -> CdpCommand {
        debug_assert_eq!(params.identifier(), method);
        CdpCommand {
            method,
            // Serializing these plain structs cannot fail: strings, finite numbers, enums.
            params: serde_json::to_value(params).unwrap_or(Value::Null),
        }
    }
}

/// `Input.dispatchMouseEvent` for a mouse message (coordinates in page CSS pixels). The
/// message was validated: its type and button are names CDP defines.
pub fn mouse_command(input: &MouseInput) -> CdpCommand {
    let event_type = input
        .event_type
        .parse::<DispatchMouseEventType>()
        .unwrap_or(DispatchMouseEventType::MouseMoved);
    let pressed_or_released = matches!(
        event_type,
        DispatchMouseEventType::MousePressed | DispatchMouseEventType::MouseReleased
    );
    let button = match input.button {
        Some(name) => name.parse::<MouseButton>().unwrap_or(MouseButton::None),
        None if pressed_or_released => MouseButton::Left,
        None => MouseButton::None,
    };
    let wheel = event_type == DispatchMouseEventType::MouseWheel;
    let mut params = DispatchMouseEventParams::new(event_type, input.x, input.y);
    params.modifiers = Some(input.modifiers.unwrap_or(0).into());
    params.button = Some(button);
    params.click_count = match input.click_count {
        Some(count) => Some(count.into()),
        None if pressed_or_released => Some(1),
        None => None,
    };
    if wheel {
        // Chrome requires both deltas on wheel events.
        params.delta_x = Some(input.delta_x.unwrap_or(0.0));
        params.delta_y = Some(input.delta_y.unwrap_or(0.0));
    }
    CdpCommand::of(DispatchMouseEventParams::IDENTIFIER, &params)
}

/// `Input.insertText` for a text insert (extended `input` of kind `text`).
pub fn insert_text_command(text: &str) -> CdpCommand {
    CdpCommand::of(InsertTextParams::IDENTIFIER, &InsertTextParams::new(text))
}

/// `Input.dispatchKeyEvent` for a keyboard message. The message was validated: its type is
/// one CDP defines.
pub fn keyboard_command(input: &KeyboardInput) -> CdpCommand {
    let event_type = input
        .event_type
        .parse::<DispatchKeyEventType>()
        .unwrap_or(DispatchKeyEventType::KeyUp);
    let mut params = DispatchKeyEventParams::new(event_type.clone());
    params.modifiers = Some(input.modifiers.unwrap_or(0).into());
    params.key = input.key.clone();
    params.code = input.code.clone();
    params.text = match (&input.text, &event_type, input.key.as_deref()) {
        (Some(text), _, _) => Some(text.clone()),
        // Enter submits forms only when its key event carries the carriage return.
        (None, DispatchKeyEventType::KeyDown, Some("Enter")) => Some("\r".to_string()),
        _ => None,
    };
    if let Some(code) = input.windows_virtual_key_code {
        params.windows_virtual_key_code = Some(code.into());
        params.native_virtual_key_code = Some(code.into());
    }
    CdpCommand::of(DispatchKeyEventParams::IDENTIFIER, &params)
}

/// The Windows virtual key code Chrome uses to act on a key (editing, navigation, Enter…):
/// the named keys Mastra maps (plus `Meta`), letters and digits from the physical `code` when
/// given (`KeyA`, `Digit1`: Shift+1 is still VK `1`), else, as Mastra does, the upper-case
/// code of a single-character key.
pub fn windows_virtual_key_code(key: &str, code: Option<&str>) -> Option<u32> {
    let named = match key {
        "Backspace" => 8,
        "Tab" => 9,
        "Enter" => 13,
        "Shift" => 16,
        "Control" => 17,
        "Alt" => 18,
        "Pause" => 19,
        "CapsLock" => 20,
        "Escape" => 27,
        " " | "Space" => 32,
        "PageUp" => 33,
        "PageDown" => 34,
        "End" => 35,
        "Home" => 36,
        "ArrowLeft" => 37,
        "ArrowUp" => 38,
        "ArrowRight" => 39,
        "ArrowDown" => 40,
        "Insert" => 45,
        "Delete" => 46,
        "Meta" => 91,
        "F1" => 112,
        "F2" => 113,
        "F3" => 114,
        "F4" => 115,
        "F5" => 116,
        "F6" => 117,
        "F7" => 118,
        "F8" => 119,
        "F9" => 120,
        "F10" => 121,
        "F11" => 122,
        "F12" => 123,
        _ => 0,
    };
    if named != 0 {
        return Some(named);
    }
    let single = |s: &str| {
        let mut chars = s.chars();
        chars.next().filter(|_| chars.next().is_none())
    };
    let from_code = code.and_then(|code| {
        single(
            code.strip_prefix("Key")
                .or_else(|| code.strip_prefix("Digit"))?,
        )
    });
    if let Some(c) = from_code.filter(char::is_ascii_alphanumeric) {
        return Some(c.to_ascii_uppercase() as u32);
    }
    // One UTF-16 unit upper-cased, as `key.toUpperCase().charCodeAt(0)` in Mastra.
    let c = single(key)?;
    let mut upper = c.to_uppercase();
    let u = upper.next().filter(|_| upper.next().is_none()).unwrap_or(c);
    (u as u32 <= 0xFFFF).then_some(u as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mouse(event_type: &'static str) -> MouseInput {
        MouseInput {
            event_type,
            x: 10.5,
            y: 20.0,
            button: None,
            click_count: None,
            delta_x: None,
            delta_y: None,
            modifiers: None,
        }
    }

    fn key(event_type: &'static str, key: &str, code: Option<&str>) -> KeyboardInput {
        KeyboardInput {
            event_type,
            key: Some(key.into()),
            code: code.map(Into::into),
            text: None,
            modifiers: None,
            windows_virtual_key_code: windows_virtual_key_code(key, code),
        }
    }

    #[test]
    fn virtual_key_codes_cover_the_keys_mastra_maps() {
        for (key, code, vk) in [
            ("Enter", None, 13),
            ("Backspace", None, 8),
            ("Tab", None, 9),
            ("Escape", None, 27),
            ("Space", None, 32),
            (" ", None, 32),
            ("Pause", None, 19),
            ("CapsLock", None, 20),
            ("Insert", None, 45),
            ("Delete", None, 46),
            ("ArrowDown", None, 40),
            ("F1", None, 112),
            ("F12", None, 123),
            ("a", None, 65),
            ("Z", Some("KeyZ"), 90),
            ("7", Some("Digit7"), 55),
            // Shift+1: the physical key is VK '1' (Mastra would give '!' = 33, VK_PRIOR).
            ("!", Some("Digit1"), 49),
            (",", Some("Comma"), 44),
            ("é", None, 201),
        ] {
            assert_eq!(
                windows_virtual_key_code(key, code),
                Some(vk),
                "{key:?} {code:?}"
            );
        }
        assert_eq!(windows_virtual_key_code("Unidentified", None), None);
        assert_eq!(windows_virtual_key_code("😀", None), None);
    }

    #[test]
    fn clicks_default_to_a_single_left_click_and_moves_to_no_button() {
        let press = mouse_command(&mouse("mousePressed"));
        assert_eq!(press.method, "Input.dispatchMouseEvent");
        assert_eq!(
            press.params,
            json!({"type": "mousePressed", "x": 10.5, "y": 20.0, "modifiers": 0,
                   "button": "left", "clickCount": 1})
        );
        let moved = mouse_command(&mouse("mouseMoved"));
        assert_eq!(moved.params["button"], "none");
        assert!(moved.params.get("clickCount").is_none());
    }

    #[test]
    fn wheel_events_carry_both_deltas() {
        let mut wheel = mouse("mouseWheel");
        wheel.delta_y = Some(120.0);
        let command = mouse_command(&wheel);
        assert_eq!(command.params["deltaX"], 0.0);
        assert_eq!(command.params["deltaY"], 120.0);
    }

    #[test]
    fn keys_get_the_codes_chrome_acts_on() {
        let enter = keyboard_command(&key("keyDown", "Enter", Some("Enter")));
        assert_eq!(enter.method, "Input.dispatchKeyEvent");
        assert_eq!(enter.params["windowsVirtualKeyCode"], 13);
        assert_eq!(enter.params["text"], "\r");
        let enter_up = keyboard_command(&key("keyUp", "Enter", Some("Enter")));
        assert!(enter_up.params.get("text").is_none());
        assert_eq!(
            keyboard_command(&key("keyDown", "a", Some("KeyA"))).params["windowsVirtualKeyCode"],
            65
        );
        assert_eq!(
            keyboard_command(&key("keyDown", "!", Some("Digit1"))).params["windowsVirtualKeyCode"],
            49
        );
        assert_eq!(
            keyboard_command(&key("keyDown", "ArrowLeft", None)).params["windowsVirtualKeyCode"],
            37
        );
        assert!(keyboard_command(&key("keyDown", "😀", None))
            .params
            .get("windowsVirtualKeyCode")
            .is_none());
    }

    #[test]
    fn typed_text_passes_through() {
        let mut typed = key("keyDown", "h", Some("KeyH"));
        typed.text = Some("h".into());
        assert_eq!(keyboard_command(&typed).params["text"], "h");
    }
}
