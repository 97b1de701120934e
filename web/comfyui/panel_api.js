// LoRA Studio panel: the JSON client for the /lora-studio/v1 routes, over host.fetchApi.

const PREFIX = "/lora-studio/v1";
export const PAGE_SIZE = 48;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function makeApi(host) {
  async function request(method, path, body) {
    const init = { method, headers: {} };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let res;
    try {
      res = await host.fetchApi(PREFIX + path, init);
    } catch (e) {
      throw new ApiError(0, "network", `cannot reach LoRA Studio (${e && e.message ? e.message : e})`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(res.status, err.code || "http_error", err.message || `HTTP ${res.status}`);
    }
    return data;
  }
  /** Every item of a paginated list (`items` + `next_cursor`), following the cursor page by page. */
  async function getAll(path, limit = 500) {
    const items = [];
    let cursor = null;
    for (;;) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await request("GET", `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      items.push(...((page && page.items) || []));
      if (!page || !page.next_cursor || page.next_cursor === cursor) return { ...page, items, next_cursor: null };
      cursor = page.next_cursor;
    }
  }
  return {
    get: (path) => request("GET", path),
    getAll,
    post: (path, body) => request("POST", path, body),
    patch: (path, body) => request("PATCH", path, body),
    put: (path, body) => request("PUT", path, body),
    del: (path) => request("DELETE", path),
    url: (path) => host.apiURL(PREFIX + path),
  };
}
