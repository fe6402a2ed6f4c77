// Adds lockfile entries for platform-specific optional packages that `npm install` left out.
//
//   node lockfile-stubs.mjs v03/package-lock.json v04/package-lock.json
//
// Why: the npm registry reachable from this project's machines does not serve every
// platform-specific optional package (e.g. @rollup/rollup-darwin-arm64,
// @msgpackr-extract/msgpackr-extract-win32-x64 answer 404). `npm install` silently skips an
// optional package it cannot fetch and leaves it out of package-lock.json, and `npm ci` then refuses
// the lockfile ("Missing: @rollup/rollup-darwin-arm64@ from lock file"). This script writes, for
// every such missing optional dependency, an entry with the pinned version, `optional: true` and the
// os/cpu/libc read from the package name, so that `npm ci` accepts the lockfile and skips the package
// on other platforms (on a matching platform npm fetches it as usual). Run it after every
// `npm install` that changes a lockfile. It never touches entries that exist.
import fs from 'node:fs'

const OS = ['aix', 'android', 'darwin', 'freebsd', 'linux', 'netbsd', 'openbsd', 'openharmony', 'sunos', 'win32']
const CPU = ['arm64', 'x64', 'ia32', 'arm', 'loong64', 'mips64el', 'ppc64', 'riscv64', 's390x', 'wasm32']

const platformOf = (name) => {
  const base = name.split('/').pop()
  const parts = base.split('-')
  const os = parts.find((p) => OS.includes(p))
  const cpu = parts.find((p) => CPU.includes(p)) ?? (parts.some((p) => p.startsWith('arm')) ? 'arm' : undefined)
  const libc = parts.some((p) => p.startsWith('musl')) ? 'musl' : parts.some((p) => p.startsWith('gnu')) ? 'glibc' : undefined
  if (!os || !cpu) return undefined
  return { os: [os], cpu: [cpu], ...(libc && os === 'linux' ? { libc: [libc] } : {}) }
}

for (const file of process.argv.slice(2)) {
  const lock = JSON.parse(fs.readFileSync(file, 'utf8'))
  const pkgs = lock.packages
  const added = []
  for (const [path, entry] of Object.entries(pkgs)) {
    for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
      // npm places these next to their parent (hoisted to the top level for our trees).
      const parentDir = path === '' ? '' : path.slice(0, path.lastIndexOf('node_modules/'))
      const candidates = [`${path}/node_modules/${dep}`, `${parentDir}node_modules/${dep}`, `node_modules/${dep}`]
      if (candidates.some((c) => pkgs[c])) continue
      const platform = platformOf(dep)
      if (!platform || !/^\d+\.\d+\.\d+/.test(version)) {
        console.error(`${file}: cannot stub ${dep}@${version} (needed by ${path}); left as is`)
        continue
      }
      const target = `node_modules/${dep}`
      pkgs[target] = {
        version,
        ...platform,
        optional: true,
        ...(entry.peer ? { peer: true } : {}),
      }
      added.push(`${dep}@${version}`)
    }
  }
  // Keep npm's key order (alphabetical below the root entry) so diffs stay small.
  const [rootKey, ...rest] = Object.keys(pkgs)
  lock.packages = Object.fromEntries([[rootKey, pkgs[rootKey]], ...rest.sort().map((k) => [k, pkgs[k]])])
  fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n')
  console.log(`${file}: ${added.length} stub(s)${added.length ? ': ' + added.join(', ') : ''}`)
}
