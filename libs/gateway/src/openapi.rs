//! The OpenAPI 3.1 document of the gateway, derived from the contracts'
//! descriptors: one `POST /<package.Service>/<Method>` per exposed method,
//! its request and response as JSON Schemas of the proto3 JSON mapping, and
//! the Connect error object for every failure.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Value, json};

use crate::protocol::{ERROR_CODES, code_name};

/// The methods that need no bearer token.
pub(crate) const ANONYMOUS: [&str; 4] = [
    "/reporunner.auth.v1.AuthService/Register",
    "/reporunner.auth.v1.AuthService/Login",
    "/reporunner.auth.v1.AuthService/Refresh",
    "/reporunner.auth.v1.AuthService/ListTierPolicies",
];

fn ref_to(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The leading comment of the element at `path` in its file, when the
/// descriptors carry source info.
fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

/// The document for `methods` (sorted by path).
pub fn document(methods: &[MethodDescriptor]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut wanted: Vec<MessageDescriptor> = Vec::new();
    for method in methods {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let streaming = method.is_server_streaming();
        let input = method.input();
        let output = method.output();
        wanted.push(input.clone());
        wanted.push(output.clone());
        let ok = if streaming {
            json!({
                "description": format!(
                    "A stream of `{}` messages as server-sent events: each event's `data` is one \
                     message; the stream ends with an `end` event, or an `error` event holding the \
                     error object. With `Content-Type: application/connect+json`, Connect envelopes \
                     instead.",
                    output.full_name()
                ),
                "content": {
                    "text/event-stream": {
                        "schema": { "type": "string" },
                        // OpenAPI 3.2's `itemSchema`, as an extension of 3.1.
                        "x-event-data": ref_to(output.full_name()),
                    }
                }
            })
        } else {
            json!({
                "description": "The response message.",
                "content": { "application/json": { "schema": ref_to(output.full_name()) } }
            })
        };
        let mut operation = json!({
            "operationId": format!("{}_{}", method.parent_service().name(), method.name()),
            "tags": [method.parent_service().name()],
            "summary": format!("{}.{}", method.parent_service().name(), method.name()),
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": ref_to(input.full_name()) } }
            },
            "responses": {
                "200": ok,
                "default": {
                    "description": "The call failed: the HTTP status follows from the error's code \
                                    (400, 401, 403, 404, 409, 429, 499, 500, 501, 503 or 504).",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before a refused call (quota) may succeed.",
                            "schema": { "type": "integer", "minimum": 0 }
                        }
                    },
                    "content": { "application/json": { "schema": ref_to("connect.Error") } }
                }
            }
        });
        if let Some(text) = comment(&method.parent_file(), method.path()) {
            operation["description"] = text.into();
        }
        if ANONYMOUS.contains(&path.as_str()) {
            operation["security"] = json!([]);
        }
        paths.insert(path, json!({ "post": operation }));
    }

    let mut schemas = BTreeMap::new();
    let mut seen = BTreeSet::new();
    while let Some(message) = wanted.pop() {
        if !seen.insert(message.full_name().to_owned()) {
            continue;
        }
        if let Some(schema) = well_known(message.full_name()) {
            schemas.insert(message.full_name().to_owned(), schema);
            continue;
        }
        schemas.insert(
            message.full_name().to_owned(),
            message_schema(&message, &mut wanted),
        );
    }
    schemas.insert(
        "connect.Error".to_owned(),
        json!({
            "type": "object",
            "description": "A failed call: its gRPC code by the Connect protocol's name, and a message.",
            "required": ["code"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": ERROR_CODES.iter().map(|c| code_name(*c)).collect::<Vec<_>>(),
                },
                "message": { "type": "string" },
                "details": { "type": "array", "items": { "type": "object" } }
            }
        }),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Repo Runner",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every public RPC of Repo Runner as HTTP/JSON (the Connect protocol's JSON \
                            mapping): POST the request message as proto3 JSON to \
                            `/<package.Service>/<Method>` with `Authorization: Bearer <access token>`. \
                            Server streams answer as server-sent events.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from AuthService/Login or AuthService/Refresh."
                }
            },
            "schemas": schemas,
        }
    })
}

/// The proto3 JSON forms of the well-known types the contracts use.
fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => {
            json!({ "type": "string", "format": "date-time", "description": "RFC 3339, UTC." })
        }
        "google.protobuf.Duration" => json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "Seconds with an `s` suffix, such as `1.5s`."
        }),
        "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.StringValue" => json!({ "type": "string" }),
        "google.protobuf.BoolValue" => json!({ "type": "boolean" }),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({ "type": "integer" }),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => int64(),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => number(),
        "google.protobuf.BytesValue" => bytes(),
        "google.protobuf.Any" => json!({
            "type": "object",
            "required": ["@type"],
            "properties": { "@type": { "type": "string" } }
        }),
        _ => return None,
    })
}

/// 64-bit integers: decimal strings in responses; requests may send numbers.
fn int64() -> Value {
    json!({
        "oneOf": [
            { "type": "string", "pattern": "^-?[0-9]{1,20}$" },
            { "type": "integer" }
        ]
    })
}

fn number() -> Value {
    json!({
        "oneOf": [
            { "type": "number" },
            { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] }
        ]
    })
}

fn bytes() -> Value {
    json!({ "type": "string", "contentEncoding": "base64" })
}

fn enum_schema(descriptor: &EnumDescriptor) -> Value {
    let names: Vec<String> = descriptor.values().map(|v| v.name().to_owned()).collect();
    json!({ "type": "string", "enum": names })
}

/// The schema of one value of `field` (an element, for a list).
fn kind_schema(kind: Kind, wanted: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => number(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "minimum": i32::MIN, "maximum": i32::MAX })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => int64(),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => bytes(),
        Kind::Enum(descriptor) => enum_schema(&descriptor),
        Kind::Message(message) => {
            let schema = ref_to(message.full_name());
            wanted.push(message);
            schema
        }
    }
}

fn field_schema(field: &FieldDescriptor, wanted: &mut Vec<MessageDescriptor>) -> Value {
    let mut schema = if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        let value = kind_schema(entry.map_entry_value_field().kind(), wanted);
        json!({ "type": "object", "additionalProperties": value })
    } else if field.cardinality() == Cardinality::Repeated {
        json!({ "type": "array", "items": kind_schema(field.kind(), wanted) })
    } else {
        kind_schema(field.kind(), wanted)
    };
    if let Some(text) = comment(&field.parent_message().parent_file(), field.path()) {
        // OpenAPI 3.1 schemas (JSON Schema 2020-12) allow siblings of `$ref`.
        if let Value::Object(map) = &mut schema {
            map.insert("description".to_owned(), text.into());
        }
    }
    schema
}

fn message_schema(message: &MessageDescriptor, wanted: &mut Vec<MessageDescriptor>) -> Value {
    let mut properties = serde_json::Map::new();
    let mut oneofs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for field in message.fields() {
        properties.insert(field.json_name().to_owned(), field_schema(&field, wanted));
        if let Some(oneof) = field.containing_oneof()
            && !oneof.is_synthetic()
        {
            oneofs
                .entry(oneof.name().to_owned())
                .or_default()
                .push(field.json_name().to_owned());
        }
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(text) = comment(&message.parent_file(), message.path()) {
        schema["description"] = text.into();
    }
    // At most one member of each oneof.
    let exclusive: Vec<Value> = oneofs
        .values()
        .filter(|members| members.len() > 1)
        .flat_map(|members| {
            let mut pairs = Vec::new();
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    pairs.push(json!({ "not": { "required": [a, b] } }));
                }
            }
            pairs
        })
        .collect();
    if !exclusive.is_empty() {
        schema["allOf"] = Value::Array(exclusive);
    }
    schema
}
