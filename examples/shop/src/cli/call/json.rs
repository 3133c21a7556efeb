//! JSON to protobuf and back for messages known only at run time, in the
//! canonical protobuf JSON mapping (field names as written or camelCase,
//! 64-bit integers as strings, bytes as base64, enums by name).

use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

use super::super::Failure;

/// The request messages in `json`: one object, or for a client-streaming
/// method an array of objects (each one message of the stream).
///
/// # Errors
///
/// `Usage` naming the field (`items[0].price`) when the text is not JSON or
/// does not fit the message type.
pub(super) fn requests(
    json: &str,
    input: &MessageDescriptor,
    client_streaming: bool,
) -> Result<Vec<DynamicMessage>, Failure> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|err| Failure::Usage(format!("the request is not valid JSON: {err}")))?;
    match value {
        serde_json::Value::Array(items) if client_streaming => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| message(item, input, &format!("[{index}]")))
            .collect(),
        serde_json::Value::Object(_) => Ok(vec![message(value, input, "")?]),
        other => Err(Failure::Usage(format!(
            "the request must be a JSON object (a {}){}, not {}",
            input.full_name(),
            if client_streaming {
                " or an array of them"
            } else {
                ""
            },
            kind(&other)
        ))),
    }
}

/// One `input` message from `value`; `at` prefixes the paths in errors.
fn message(
    value: serde_json::Value,
    input: &MessageDescriptor,
    at: &str,
) -> Result<DynamicMessage, Failure> {
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize(input.clone(), tracked).map_err(|err| {
        let path = track.path().to_string();
        let field = match (at, path.as_str()) {
            ("", ".") => String::new(),
            (at, ".") => format!(" at {at}"),
            (at, path) => format!(
                " in field `{at}{}{path}`",
                if at.is_empty() { "" } else { "." }
            ),
        };
        Failure::Usage(format!(
            "the request does not fit {}{field}: {err}",
            input.full_name()
        ))
    })
}

/// `message` as pretty JSON.
///
/// # Errors
///
/// `Failed` if a value has no JSON form (in practice never).
pub(super) fn render(message: &DynamicMessage) -> Result<String, Failure> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|err| Failure::Failed(format!("cannot show the answer as JSON: {err}")))?;
    String::from_utf8(out)
        .map_err(|err| Failure::Failed(format!("cannot show the answer as JSON: {err}")))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn echo_request() -> MessageDescriptor {
        DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("shop.echo.v1.EchoRequest")
            .unwrap()
    }

    #[test]
    fn json_becomes_a_message_and_back() {
        let input = echo_request();
        let messages = requests(r#"{"message": "hi", "delay_ms": 5}"#, &input, false).unwrap();
        assert_eq!(messages.len(), 1);
        let json: serde_json::Value = serde_json::from_str(&render(&messages[0]).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"message": "hi", "delayMs": 5}));
    }

    #[test]
    fn a_wrong_value_names_its_field() {
        let Err(Failure::Usage(problem)) = requests(
            r#"{"message": "hi", "delay_ms": "soon"}"#,
            &echo_request(),
            false,
        ) else {
            panic!("accepted");
        };
        assert!(problem.contains("field `delay_ms`"), "{problem}");
        assert!(problem.contains("shop.echo.v1.EchoRequest"), "{problem}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let Err(Failure::Usage(problem)) = requests(r#"{"mesage": "hi"}"#, &echo_request(), false)
        else {
            panic!("accepted");
        };
        assert!(problem.contains("mesage"), "{problem}");
    }

    #[test]
    fn streams_take_arrays_and_paths_say_which_item() {
        let input = echo_request();
        let messages = requests(r#"[{"message": "a"}, {"message": "b"}]"#, &input, true).unwrap();
        assert_eq!(messages.len(), 2);
        let Err(Failure::Usage(problem)) =
            requests(r#"[{"message": "a"}, {"repeat": -1}]"#, &input, true)
        else {
            panic!("accepted");
        };
        assert!(problem.contains("`[1].repeat`"), "{problem}");
        assert!(matches!(
            requests("[]", &input, false),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            requests("{", &input, false),
            Err(Failure::Usage(_))
        ));
    }
}
