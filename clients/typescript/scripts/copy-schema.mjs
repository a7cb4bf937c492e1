// tsc does not copy .d.ts files: the generated types go beside the
// compiled code, where dist/src/index.d.ts refers to them.
import { copyFileSync } from "node:fs";

copyFileSync("src/schema.d.ts", "dist/src/schema.d.ts");
