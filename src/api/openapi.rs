//! The OpenAPI 3.1 document of the event API, served at `/v1/openapi.json`. A copy is committed
//! next to this file (`openapi.json`); tests keep the copy equal to this document and every
//! documented path equal to a route.

use serde_json::{Value, json};

/// Paths the document describes, with their methods (kept in step with [`super::router`]).
pub const PATHS: &[(&str, &str)] = &[
    ("get", "/v1/stores"),
    ("get", "/v1/stores/{store}/events"),
    ("get", "/v1/stores/{store}/events/live"),
    ("post", "/v1/stores/{store}/reset"),
    ("get", "/v1/changes"),
    ("get", "/v1/changes/live"),
];

pub fn document() -> Value {
    let store_param = json!({
        "name": "store", "in": "path", "required": true,
        "description": "`<protocol>:<name>`, URL-encoded, e.g. `livestore:todos`",
        "schema": {"type": "string"}
    });
    let after = |what: &str| json!({"name": "after", "in": "query", "required": false, "description": what, "schema": {"type": "integer", "minimum": 0}});
    let limit = json!({"name": "limit", "in": "query", "required": false,
        "description": "page size, 1 to 1000 (default 100)", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}});
    let errors = json!({
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"},
    });
    let with = |mut base: Value, extra: Value| {
        base.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        base
    };
    let ok = |schema: Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Junction event API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One view of every store of every protocol. Every endpoint needs `Authorization: Bearer`: `auth.admin_secret` or a JWT whose claims say `permissions.isAdmin` may do everything; another client JWT may list and read (events and live events) exactly the stores its `permissions.canRead` grants. The change log and reset need admin credentials."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/stores": {"get": {
                "summary": "Registered stores, in registry order",
                "parameters": [after("registry id to continue after (`next_after` of the previous page)"), limit],
                "responses": with(ok(json!({"type": "object", "required": ["stores", "next_after"], "properties": {
                    "stores": {"type": "array", "items": {"$ref": "#/components/schemas/Store"}},
                    "next_after": {"type": ["integer", "null"]}
                }})), errors.clone())
            }},
            "/v1/stores/{store}/events": {"get": {
                "summary": "A store's events after a seq, in seq order",
                "parameters": [store_param, after("seq to continue after (0: from the start)"), limit],
                "responses": with(with(ok(json!({"type": "object", "required": ["events"], "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                }})), errors.clone()), json!({"404": {"$ref": "#/components/responses/Error"}}))
            }},
            "/v1/stores/{store}/events/live": {"get": {
                "summary": "Server-Sent Events: every event after the cursor once and in order, catch-up then live",
                "description": "Each event is an SSE message `event: event`, `id: <seq>`, `data: <Event JSON>`. When the subscription ends (the store was reset, or the client fell too far behind) a last message `event: end` carries `{\"reason\": …}`. A reconnecting EventSource resumes with `Last-Event-ID`.",
                "parameters": [store_param, after("seq to start after (default: Last-Event-ID, else 0)"),
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}],
                "responses": with(json!({"200": {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}), errors.clone())
            }},
            "/v1/stores/{store}/reset": {"post": {
                "summary": "Remove every event of a store and give it a new backend id",
                "parameters": [store_param],
                "responses": with(with(ok(json!({"$ref": "#/components/schemas/Store"})), errors.clone()),
                    json!({"404": {"$ref": "#/components/responses/Error"}}))
            }},
            "/v1/changes": {"get": {
                "summary": "The sequenced change log: committed batches of every store, in commit order",
                "parameters": [after("change-log position to continue after"), limit],
                "responses": with(ok(json!({"type": "object", "required": ["changes"], "properties": {
                    "changes": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}}
                }})), errors.clone())
            }},
            "/v1/changes/live": {"get": {
                "summary": "Server-Sent Events: the change log after a position, then each batch as it commits (admin)",
                "description": "Each entry is an SSE message `event: change`, `id: <position>`, `data: <Change JSON>`, in position order. A reconnecting EventSource resumes with `Last-Event-ID`.",
                "parameters": [after("change-log position to start after (default: Last-Event-ID, else 0)"),
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}],
                "responses": with(json!({"200": {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}), errors)
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}},
            "schemas": {
                "Protocol": {"type": "string", "enum": ["synckit", "livestore", "pocket"]},
                "Store": {"type": "object", "required": ["id", "protocol", "name", "head", "event_count", "backend_id"], "properties": {
                    "id": {"type": "integer"}, "protocol": {"$ref": "#/components/schemas/Protocol"}, "name": {"type": "string"},
                    "head": {"type": "integer"}, "event_count": {"type": "integer"}, "backend_id": {"type": "string"}}},
                "Event": {"type": "object", "required": ["seq", "parent_seq", "name", "args", "client_id", "session_id", "created_at", "change_pos"], "properties": {
                    "seq": {"type": "integer"}, "parent_seq": {"type": "integer"}, "name": {"type": "string"},
                    "args": {"description": "any JSON, exactly as written"}, "client_id": {"type": "string"},
                    "session_id": {"type": "string"}, "created_at": {"type": "string"}, "change_pos": {"type": "integer"}}},
                "Change": {"type": "object", "required": ["position", "store", "first_seq", "last_seq", "event_count", "created_at"], "properties": {
                    "position": {"type": "integer"},
                    "store": {"type": "object", "required": ["protocol", "name"], "properties": {
                        "protocol": {"$ref": "#/components/schemas/Protocol"}, "name": {"type": "string"}}},
                    "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"},
                    "event_count": {"type": "integer"}, "created_at": {"type": "string"}}}
            }
        }
    })
}
