// TEST-ONLY OpenID Provider for the git-jit end-to-end tests (never for production).
//
// Runs the npm package `oidc-provider` with:
//   - a public native client `git-jit-cli` (device code, refresh token, authorization code),
//   - confidential clients `git-jit-test` and `other-app` (authorization code, CIBA, refresh),
//   - a tiny interaction handler that logs in the account named by `login_hint` (or the
//     `account` form field) and grants consent without a browser,
//   - CIBA requests approved automatically for any `login_hint`.
//
// Usage: node server.mjs --port PORT --jwks FILE
//   If FILE does not exist, fresh RS256 + ES256 signing keys are generated and written there,
//   so the harness rotates keys by deleting the file and restarting on the same port.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// Each step of the start is logged with the time since the process began, so a start that
// does not come up in time says which step it stood at.
const step = (what) => console.log(`oidc-provider: ${what} at ${Math.round(performance.now())} ms`);
step('modules loaded');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    jwks: { type: 'string' },
  },
});

const port = Number(args.port || process.env.OIDC_PORT);
const jwksFile = args.jwks || process.env.OIDC_JWKS_FILE;
if (!port || !jwksFile) {
  console.error('usage: node server.mjs --port PORT --jwks FILE');
  process.exit(2);
}

function loadOrGenerateJwks(file) {
  if (existsSync(file)) {
    return JSON.parse(readFileSync(file, 'utf8'));
  }
  const stamp = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const jwks = {
    keys: [
      { ...rsa, kid: `rs256-${stamp}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `es256-${stamp}`, alg: 'ES256', use: 'sig' },
    ],
  };
  // Written whole or not at all: a start killed midway leaves no half a key set behind.
  writeFileSync(`${file}.tmp`, JSON.stringify(jwks), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  step('keys generated');
  return jwks;
}

// Accounts are whatever the test names; claims derive from the name so tests can predict them.
// `alice@example.com` → email alice@example.com; `bob` → bob@example.com. Groups: an account
// whose local part contains "admin" is in `git-jit-admins`; everyone is in `engineering`.
function claimsFor(accountId) {
  const email = accountId.includes('@') ? accountId : `${accountId}@example.com`;
  const local = email.split('@')[0];
  const groups = ['engineering'];
  if (local.includes('admin')) groups.push('git-jit-admins');
  return {
    sub: accountId,
    email,
    email_verified: !local.includes('unverified'),
    name: local.charAt(0).toUpperCase() + local.slice(1),
    groups,
  };
}

// Loopback redirects of the native client match on any port (RFC 8252 §7.3): the tests'
// callback, and the security console's sign-in on a test broker (`<broker>/console/callback`).
const redirectUris = ['http://127.0.0.1/callback', 'http://127.0.0.1/console/callback'];

const configuration = {
  clients: [
    {
      client_id: 'git-jit-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      id_token_signed_response_alg: 'RS256',
    },
    {
      client_id: 'git-jit-test',
      client_secret: 'git-jit-test-secret',
      grant_types: ['authorization_code', 'refresh_token', 'urn:openid:params:grant-type:ciba'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      backchannel_token_delivery_mode: 'poll',
      id_token_signed_response_alg: 'RS256',
    },
    {
      client_id: 'git-jit-test-es256',
      client_secret: 'git-jit-test-es256-secret',
      grant_types: ['authorization_code', 'refresh_token', 'urn:openid:params:grant-type:ciba'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      backchannel_token_delivery_mode: 'poll',
      id_token_signed_response_alg: 'ES256',
    },
    {
      client_id: 'other-app',
      client_secret: 'other-app-secret',
      grant_types: ['authorization_code', 'refresh_token', 'urn:openid:params:grant-type:ciba'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      backchannel_token_delivery_mode: 'poll',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: loadOrGenerateJwks(jwksFile),
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the requested claims into the ID token itself (not only userinfo), as SSO setups do.
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return claimsFor(sub);
      },
    };
  },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      async processLoginHint(_ctx, loginHint) {
        return loginHint;
      },
      async validateRequestContext() {},
      async verifyUserCode() {},
      async triggerAuthenticationDevice(_ctx, request, account, client) {
        // Auto-approve: the "authentication device" says yes to everything asked.
        const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
        grant.addOIDCScope(request.scope);
        if (request.claims?.id_token) grant.addOIDCClaims(Object.keys(request.claims.id_token));
        await grant.save();
        setImmediate(() => {
          provider.backchannelResult(request, grant).catch((err) => console.error('ciba approval failed', err));
        });
      },
    },
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'ES256'],
  },
  pkce: {
    required: () => true,
  },
  interactions: {
    url(_ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    BackchannelAuthenticationRequest: 120,
    DeviceCode: 300,
    Grant: 3600,
    IdToken: 300,
    Interaction: 300,
    RefreshToken: 3600,
    Session: 3600,
  },
  cookies: {
    keys: ['test-only-cookie-key'],
  },
};

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, configuration);
step('provider configured');

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function grantConsent(interaction) {
  const { prompt: { details }, params, session, grantId } = interaction;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return grant.save();
}

// The interaction handler: the only "UI" of this provider.
//   GET  /interaction/:uid        login with login_hint if given, else show a form asking `account`;
//                                 consent is always granted.
//   POST /interaction/:uid/login  form field `account` logs that account in.
async function handleInteraction(req, res) {
  const url = new URL(req.url, issuer);
  const match = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return false;
  try {
    const interaction = await provider.interactionDetails(req, res);
    const { prompt, params } = interaction;
    if (prompt.name === 'login') {
      let account = params.login_hint;
      if (req.method === 'POST' && match[2]) {
        account = (await readForm(req)).get('account');
      }
      if (!account) {
        res.setHeader('Content-Type', 'text/html; charset=utf-8');
        res.end(`<!DOCTYPE html><html><head><title>Test login</title></head><body>
<form id="login" method="post" action="/interaction/${escapeHtml(interaction.uid)}/login">
<input type="text" name="account" placeholder="account"/>
<button type="submit">Sign in</button>
</form></body></html>`);
        return true;
      }
      await provider.interactionFinished(req, res, { login: { accountId: account } }, { mergeWithLastSubmission: false });
      return true;
    }
    if (prompt.name === 'consent') {
      const grantId = await grantConsent(interaction);
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return true;
    }
    res.statusCode = 400;
    res.end(`unsupported prompt ${prompt.name}`);
  } catch (err) {
    console.error('interaction failed', err);
    res.statusCode = 500;
    res.end(String(err));
  }
  return true;
}

const callback = provider.callback();
const server = createServer(async (req, res) => {
  if (req.url === '/healthz') {
    res.end('ok');
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    await handleInteraction(req, res);
    return;
  }
  callback(req, res);
});

server.on('error', (err) => {
  console.error(`server error: ${err.code || err}`);
  process.exit(err.code === 'EADDRINUSE' ? 98 : 1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
