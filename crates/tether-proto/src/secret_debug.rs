//! Redacting `Debug` for the generated messages that carry secrets.

use std::fmt;

use crate::tunnel::{EnvVar, InlineCredentials};

impl fmt::Debug for InlineCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field("session_token", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let creds = InlineCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: "FwoGZXIvYXdzE".into(),
        };
        let text = format!("{creds:?}");
        assert!(text.contains("AKIDEXAMPLE"));
        assert!(!text.contains("wJalrXUtnFEMI"));
        assert!(!text.contains("FwoGZXIvYXdzE"));
        let var = EnvVar {
            name: "TOKEN".into(),
            value: "hunter2".into(),
        };
        assert!(!format!("{var:?}").contains("hunter2"));
    }
}
