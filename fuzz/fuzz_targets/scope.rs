//! Scopes as a token request carries them: the `scope`, `refs`, `ttl`, `role` and `reason`
//! fields of `POST /oauth/token` (one field per input line) through `ExchangeRequest`, and
//! the whole input through `Scope::parse` and `Actions::parse`.
//!
//! Properties: never a panic; whatever parses prints back to text that parses to the same
//! value (scope, actions, ttl, the whole request through its form); an accepted scope names
//! a normalised repository path and only `read`/`write`; a scope covers itself and the
//! narrower scopes made from it, and never a scope for another repository.
#![no_main]

use jit_proto::api::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN};
use jit_proto::exchange::{ExchangeForm, Ttl, parse_refs};
use jit_proto::{Action, Actions, ExchangeRequest, RepoPath, Scope, Secret};
use libfuzzer_sys::fuzz_target;

fn check_scope(text: &str) {
    let Ok(scope) = Scope::parse(text) else {
        return;
    };
    let printed = scope.to_string();
    assert_eq!(Scope::parse(&printed).as_ref(), Ok(&scope));
    assert_eq!(
        RepoPath::parse(scope.repo.as_str()).as_ref(),
        Ok(&scope.repo)
    );
    assert!(scope.covers(&scope));
    for action in scope.actions.iter() {
        let narrower = Scope::new(scope.repo.clone(), action);
        assert!(scope.covers(&narrower));
        assert!(narrower.covers(&narrower));
    }
    let (head, actions) = printed.rsplit_once(':').unwrap_or_default();
    assert_eq!(head, format!("repo:{}", scope.repo));
    assert!(actions == "read" || actions == "write" || actions == "read,write");
    // The same actions on a sibling repository are never covered.
    if let Ok(other) = RepoPath::parse(&format!("{}x", scope.repo)) {
        assert!(!scope.covers(&Scope::new(other, scope.actions)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_scope(text);
    if let Ok(actions) = Actions::parse(text) {
        assert_eq!(Actions::parse(&actions.to_string()), Ok(actions));
        assert!(actions.iter().count() >= 1);
        assert!(actions.covers(actions));
        assert!(actions.covers(Actions::from(Action::Read)) == actions.contains(Action::Read));
    }
    if let Ok(ttl) = Ttl::parse(text) {
        assert_eq!(Ttl::parse(&ttl.to_string()), Ok(ttl));
        assert_eq!(Ttl::from_minutes(ttl.minutes()), Some(ttl));
    }
    if let Ok(refs) = parse_refs(text) {
        let joined: Vec<&str> = refs.iter().map(|r| r.as_str()).collect();
        assert_eq!(parse_refs(&joined.join(" ")).ok().as_ref(), Some(&refs));
    }

    let mut fields = text.split('\n');
    let mut field = || fields.next().filter(|f| !f.is_empty()).map(str::to_owned);
    let form = ExchangeForm {
        grant_type: Some(GRANT_TYPE_TOKEN_EXCHANGE.to_owned()),
        subject_token: Some(Secret::new("subject")),
        subject_token_type: Some(TOKEN_TYPE_ID_TOKEN.to_owned()),
        scope: field(),
        refs: field(),
        ttl: field(),
        role: field(),
        reason: field(),
        requested_token_type: None,
        actor_token: None,
        approval: field(),
        request_id: field(),
    };
    if let Some(scope) = &form.scope {
        check_scope(scope);
    }
    let Ok(request) = ExchangeRequest::try_from(form.clone()) else {
        return;
    };
    // The form's scope is a whitespace-separated list that must hold exactly one scope.
    let scope_text = form.scope.as_deref().unwrap_or_default();
    let listed: Vec<&str> = scope_text.split_whitespace().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(Scope::parse(listed[0]).as_ref(), Ok(&request.scope));
    let again = ExchangeRequest::try_from(request.to_form());
    assert_eq!(again.as_ref(), Ok(&request));
});
