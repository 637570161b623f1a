// `npm run check`: one tsc pass over src/ (checkJs, strict: it fails on any type error) that emits
// the declarations into a temporary directory, then fails when types/ (committed, so that an
// install from git has them) differs: run `npm run types` after changing the client's JSDoc.
// One pass instead of `tsc --noEmit` and a second emit: the emit type-checks all the same.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const fresh = mkdtempSync(join(tmpdir(), "portex-pay-types-"));
try {
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  const args = [tsc, "-p", "tsconfig.types.json", "--outDir", fresh];
  const { status } = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
  if (status !== 0) throw new Error("tsc found type errors (above) in clients/js/src");
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
} catch (error) {
  console.error(String(error instanceof Error ? error.message : error));
  process.exitCode = 1;
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
