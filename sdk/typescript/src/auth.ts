/**
 * Where the client's bearer token comes from: a JWT minted from an API key at
 * `/auth/token` (renewed before it expires), or the application's own `getToken`. One
 * renewal is in flight at a time, however many requests wait for it.
 */

/** A token and, when known, when it expires (milliseconds since the epoch). */
export interface Token {
  token: string;
  expiresAt?: number;
}

/** Renew this long before the token's expiry, so no request carries a dying token. */
const EARLY_MS = 30_000;

/** The `exp` of a JWT, in milliseconds, when the token is one. */
export function jwtExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class TokenSource {
  private current: Token | undefined;
  private issuedAt: number | undefined;
  private renewing: Promise<Token> | undefined;

  constructor(
    private readonly fetchToken: (() => Promise<Token>) | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether requests carry a token at all. */
  get enabled(): boolean {
    return this.fetchToken !== undefined;
  }

  /** A token that is not about to expire, renewing it first when it is. */
  async get(): Promise<string | undefined> {
    if (!this.fetchToken) return undefined;
    const held = this.current;
    if (held && (held.expiresAt === undefined || held.expiresAt - this.lifetimeMargin(held) > this.now())) {
      return held.token;
    }
    return (await this.renew()).token;
  }

  /** After a 401 with `used`: renews, unless another request already has. */
  async rejected(used: string | undefined): Promise<string | undefined> {
    if (!this.fetchToken) return undefined;
    if (this.current && this.current.token !== used) return this.current.token;
    this.current = undefined;
    return (await this.renew()).token;
  }

  private lifetimeMargin(held: Token): number {
    // A short-lived token is renewed at half its life, a long one 30 s before it expires.
    const issuedFor = (held.expiresAt ?? 0) - (this.issuedAt ?? 0);
    return Math.min(EARLY_MS, Math.max(0, issuedFor / 2));
  }

  private renew(): Promise<Token> {
    if (!this.renewing) {
      const fetchToken = this.fetchToken!;
      this.renewing = fetchToken()
        .then((token) => {
          this.issuedAt = this.now();
          this.current = { token: token.token, expiresAt: token.expiresAt ?? jwtExpiry(token.token) };
          return this.current;
        })
        .finally(() => {
          this.renewing = undefined;
        });
    }
    return this.renewing;
  }
}
