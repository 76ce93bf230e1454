//! The client's HTTP calls: envelopes, pages, and following an SSE stream.

use reqwest::Method;
use serde_json::Value;

use super::{Failure, Result};

pub(super) struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    pub(super) fn from_env() -> Result<Self> {
        let url = std::env::var("DGIDGI_API_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8080/api/v1".into());
        let url = url.trim_end_matches('/');
        let base = if url.ends_with("/api/v1") {
            url.to_string()
        } else {
            format!("{url}/api/v1")
        };
        let key = std::env::var("DGIDGI_API_KEY").map_err(|_| {
            Failure::new("NO_API_KEY", "set DGIDGI_API_KEY to an API key (chy_...)")
        })?;
        Ok(Self {
            base,
            key,
            http: reqwest::Client::new(),
        })
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
            .await
            .map_err(|e| Failure::new("UNREACHABLE", format!("{}: {e}", self.base)))
    }

    /// The `data` of a JSON answer, or the API's error.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NO_CONTENT || text.is_empty() {
            return if status.is_success() {
                Ok(Value::Null)
            } else {
                Err(Failure::new("HTTP_ERROR", format!("HTTP {status}")))
            };
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| Failure::new("BAD_RESPONSE", format!("HTTP {status}: {text}")))?;
        if let Some(error) = body.get("error") {
            return Err(Failure::new(
                error["code"].as_str().unwrap_or("ERROR"),
                error["message"].as_str().unwrap_or_default(),
            ));
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Every item of a list route, page after page (at most 50 pages).
    pub(super) async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let page = match &cursor {
                Some(c) => format!("{path}?limit=100&cursor={c}"),
                None => format!("{path}?limit=100"),
            };
            let res = self.send(Method::GET, &page, None).await?;
            let body: Value = res
                .json()
                .await
                .map_err(|e| Failure::new("BAD_RESPONSE", e.to_string()))?;
            if let Some(error) = body.get("error") {
                return Err(Failure::new(
                    error["code"].as_str().unwrap_or("ERROR"),
                    error["message"].as_str().unwrap_or_default(),
                ));
            }
            items.extend(body["data"].as_array().cloned().unwrap_or_default());
            cursor = body["meta"]["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// Follows an SSE stream from after `last`, calling `on` with (id, event, data) until it
    /// returns false or the stream ends.
    pub(super) async fn follow(
        &self,
        path: &str,
        last: i64,
        mut on: impl FnMut(i64, &str, &Value) -> bool,
    ) -> Result<i64> {
        // Always named, 0 included: a chat stream without it starts at the reply in
        // flight, and the reply we wait for may already have ended.
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("last-event-id", last.to_string());
        let mut res = req
            .send()
            .await
            .map_err(|e| Failure::new("UNREACHABLE", e.to_string()))?;
        if !res.status().is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            return Err(Failure::new(
                body["error"]["code"].as_str().unwrap_or("HTTP_ERROR"),
                body["error"]["message"].as_str().unwrap_or_default(),
            ));
        }
        let mut buffer = String::new();
        let mut seen = last;
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| Failure::new("STREAM_BROKEN", e.to_string()))?
        {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let Some(id) = id else { continue };
                seen = id;
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if !on(id, &event, &data) {
                    return Ok(seen);
                }
            }
        }
        Ok(seen)
    }
}
