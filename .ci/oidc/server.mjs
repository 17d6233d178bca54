// A real OpenID Connect provider (panva/oidc-provider) for Switchboard's headless sign-in test.
// Only the login/consent UI is ours: one form, POST /interaction/:uid with `sub` (+ `email`,
// `email_verified`, `name`), which signs that user in and grants what the client asked for.
// Everything else (authorization endpoint, PKCE, nonce, code exchange, id_token signing) is the
// library's, unchanged. See README.md for the exact HTTP steps.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { Provider, interactionPolicy } from 'oidc-provider';

const port = Number(process.env.OIDC_PORT || 9400);
const host = process.env.OIDC_HOST || '127.0.0.1';
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;

// Claims per subject, written by the login form. Tokens read them at the token endpoint, so a
// test that changes a user's email should use its own `sub` (tests may run concurrently).
const users = new Map();
const defaultEmail = (sub) => (sub.includes('@') ? sub : `${sub}@example.test`);

// Always show the login form, even when the cookie jar holds a provider session: every test
// then performs the same requests and signs in as exactly the user it posts.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'always_login',
  'the test provider asks for the user on every authorization request',
  (ctx) => (ctx.oidc.result?.login ? interactionPolicy.Check.NO_NEED_TO_PROMPT
    : interactionPolicy.Check.REQUEST_PROMPT),
));

// Ephemeral signing key, new per start (kid = its JWK thumbprint); relying parties fetch /jwks.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'switchboard-test',
    client_secret: 'switchboard-test-secret',
    // "native" only for RFC 8252 §7.3 loopback matching: any port on http://127.0.0.1 (and [::1])
    // matches the registered port-less URI, because the test server binds port 0. The client is
    // still confidential (client_secret_basic; client_secret_post is accepted for it too).
    application_type: 'native',
    redirect_uris: [
      'http://127.0.0.1/auth/oidc/callback',
      'http://[::1]/auth/oidc/callback',
      'http://localhost/auth/oidc/callback',
    ],
    post_logout_redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  ttl: {
    Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60,
    AccessToken: 3600, IdToken: 3600, RefreshToken: 86400,
  },
  pkce: { required: () => true }, // S256 only (the library's only method)
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put scope-granted claims (email, email_verified, name) in the id_token, not only in userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: {
    policy,
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  // Distinct names so they cannot clash with the app's cookies in a shared cookie jar
  // (cookies are per host, not per port: the app is on 127.0.0.1 too).
  cookies: {
    keys: ['switchboard-test-cookie-key'],
    names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' },
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const u = users.get(sub) ?? {};
        return {
          sub,
          email: u.email ?? defaultEmail(sub),
          email_verified: u.email_verified ?? true,
          ...(u.name === undefined ? {} : { name: u.name }),
        };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'end_session.error']) {
  provider.on(ev, (...args) => {
    const err = args.find((a) => a instanceof Error);
    console.log(`[${ev}] ${err?.message ?? ''} ${err?.error_description ?? ''}`);
  });
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, 'text/plain', 'interaction uid does not match the op_interaction cookie\n');
    return;
  }
  const { params } = details;

  if (req.method === 'GET') {
    const hint = params.login_hint ?? '';
    send(res, 200, 'text/html; charset=utf-8', `<!doctype html><title>Sign in</title>
<p>Client <b>${escapeHtml(params.client_id)}</b> asks for: ${escapeHtml(params.scope)}</p>
<form method="post" action="/interaction/${escapeHtml(uid)}">
  <label>sub <input name="sub" value="${escapeHtml(hint)}" required></label>
  <label>email <input name="email" placeholder="default: sub@example.test"></label>
  <label>email_verified <select name="email_verified"><option>true</option><option>false</option></select></label>
  <label>name <input name="name"></label>
  <button>Sign in and allow</button>
  <button name="action" value="deny">Deny</button>
</form>\n`);
    return;
  }

  if (req.method !== 'POST') {
    send(res, 405, 'text/plain', 'GET or POST\n');
    return;
  }

  const form = await readForm(req);
  if (form.get('action') === 'deny') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the test user denied the request',
    }, { mergeWithLastSubmission: false });
    return;
  }

  const sub = form.get('sub')?.trim() || params.login_hint;
  if (!sub) {
    send(res, 400, 'text/plain', 'form field `sub` is required\n');
    return;
  }
  const user = {
    email: form.get('email')?.trim() || defaultEmail(sub),
    email_verified: form.get('email_verified') !== 'false',
    name: form.get('name')?.trim() || undefined,
  };
  users.set(sub, user);

  // Consent: grant exactly what the authorization request asked for.
  const grant = new provider.Grant({ accountId: sub, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missingClaims = details.prompt.details?.missingOIDCClaims;
  if (missingClaims?.length) grant.addOIDCClaims(missingClaims);
  const grantId = await grant.save();

  // Switching users in one cookie jar: drop the old provider session here, otherwise the library
  // answers the resume request with an auto-submitting logout form (a browser-only extra step).
  if (details.session?.accountId && details.session.accountId !== sub) {
    const old = await provider.Session.findByUid(details.session.uid);
    await old?.destroy();
    delete details.session;
    await details.save(details.exp - Math.floor(Date.now() / 1000));
  }

  console.log(`[login] sub=${sub} email=${user.email} email_verified=${user.email_verified} client=${params.client_id}`);
  await provider.interactionFinished(req, res, {
    login: { accountId: sub, remember: false },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const m = /^\/interaction\/([^/?#]+)\/?(?:\?.*)?$/.exec(req.url);
  if (!m) {
    callback(req, res);
    return;
  }
  interaction(req, res, m[1]).catch((err) => {
    console.log(`[interaction] ${err.name}: ${err.message}`);
    if (!res.headersSent) send(res, err.statusCode || 500, 'text/plain', `${err.name}: ${err.message}\n`);
  });
});

server.listen(port, host, () => {
  console.log(`oidc-provider ${issuer} listening on ${host}:${port} (node ${process.version})`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
