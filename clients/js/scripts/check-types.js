// Fails when types/ (committed, so a git install has the declarations) is not what tsc now
// generates from src/'s JSDoc: run `npm run types` after changing the client's signatures.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const fresh = mkdtempSync(join(tmpdir(), "portex-pay-types-"));
try {
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.types.json", "--outDir", fresh], {
    cwd: root,
    stdio: "inherit",
  });
  const committed = join(root, "types");
  const names = [...new Set([...readdirSync(fresh), ...readdirSync(committed)])].sort();
  const stale = names.filter((name) => {
    const read = (dir) => { try { return readFileSync(join(dir, name), "utf8"); } catch { return null; } };
    return read(fresh) !== read(committed);
  });
  if (stale.length > 0) {
    console.error(`clients/js/types is stale (${stale.join(", ")}): run \`npm run types\` in clients/js`);
    process.exitCode = 1;
  }
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
