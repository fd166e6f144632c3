// The MCP server command a host (Claude Desktop) runs for an installed bundle, as the
// official packer's library computes it: `${__dirname}` and `${user_config.KEY}` substituted
// (user values over the manifest's defaults), platform overrides applied.
//
// usage: node mcpb_config.mjs MCPB_PACKAGE_DIR EXTENSION_DIR USER_CONFIG_JSON
//
//   MCPB_PACKAGE_DIR  node_modules/@anthropic-ai/mcpb
//   EXTENSION_DIR     the unpacked bundle (holds manifest.json)
//   USER_CONFIG_JSON  the values the user entered, e.g. {"token": "tmcp_…"}
//
// Prints the resolved mcp_config ({command, args, env}) as JSON; exits 1 with the reason
// when the host would not start the server (missing required configuration).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, extensionDir, userConfigJson] = process.argv.slice(2);
if (!packageDir || !extensionDir || userConfigJson === undefined) {
  console.error("usage: node mcpb_config.mjs MCPB_PACKAGE_DIR EXTENSION_DIR USER_CONFIG_JSON");
  process.exit(64);
}
const { getMcpConfigForManifest } = await import(
  pathToFileURL(path.join(packageDir, "dist", "index.js")).href
);
const manifest = JSON.parse(fs.readFileSync(path.join(extensionDir, "manifest.json"), "utf8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: extensionDir,
  systemDirs: {},
  userConfig: JSON.parse(userConfigJson),
  pathSeparator: path.sep,
});
if (!config) {
  console.error("the host would not start this bundle: required configuration is missing");
  process.exit(1);
}
process.stdout.write(JSON.stringify(config) + "\n");
