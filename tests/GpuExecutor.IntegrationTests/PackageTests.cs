namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The Debian package (scripts/package-deb.sh, which scripts/test.sh runs after publishing) under
/// the real dpkg, installed into a scratch root: `dpkg --root` with its maintainer scripts run
/// outside a chroot (DPKG_ROOT set, which they honour), and --force-depends since the scratch
/// root has no libc6 to satisfy the package's dependencies.
/// </summary>
public sealed class PackageTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-dpkg-root").FullName;
    private readonly string _work = Directory.CreateTempSubdirectory("gpu-executor-dpkg-work").FullName;

    public void Dispose()
    {
        Directory.Delete(_root, recursive: true);
        Directory.Delete(_work, recursive: true);
    }

    internal static string Package => Environment.GetEnvironmentVariable("GPU_EXECUTOR_PACKAGE") ?? "";

    internal static void RequirePackage()
    {
        string? missing = !File.Exists(Package) ? "GPU_EXECUTOR_PACKAGE does not name a built package"
            : !File.Exists("/usr/bin/dpkg") ? "no dpkg on this host"
            : null;
        if (missing is not null)
            Testbed.Missing($"needs the Debian package ({missing}); run scripts/test.sh, which builds it");
    }

    private async Task<string> DpkgAsync(params string[] arguments)
    {
        var (exitCode, stdout, stderr) = await Testbed.RunAsync("dpkg", ["--root", _root, "--force-script-chrootless", "--force-depends", .. arguments], null, _work);
        Assert.True(exitCode == 0, $"dpkg {string.Join(' ', arguments)} failed ({exitCode}):\n{stdout}{stderr}");
        return stdout + stderr;
    }

    private string InRoot(string path) => Path.Combine(_root, path.TrimStart('/'));

    /// <summary>The same package with another version: what an upgrade brings.</summary>
    private async Task<string> RebuildAsAsync(string version)
    {
        var unpacked = Path.Combine(_work, "unpacked-" + version);
        var (exitCode, _, stderr) = await Testbed.RunAsync("dpkg-deb", ["-R", Package, unpacked], null, _work);
        Assert.True(exitCode == 0, stderr);
        var control = Path.Combine(unpacked, "DEBIAN", "control");
        var lines = File.ReadAllLines(control).Select(line => line.StartsWith("Version: ", StringComparison.Ordinal) ? "Version: " + version : line);
        File.WriteAllLines(control, lines);
        var package = Path.Combine(_work, $"gpu-executor_{version}_amd64.deb");
        (exitCode, _, stderr) = await Testbed.RunAsync("dpkg-deb", ["--root-owner-group", "--build", unpacked, package], null, _work);
        Assert.True(exitCode == 0, stderr);
        return package;
    }

    private async Task<string> InstalledVersionAsync()
    {
        var (_, stdout, _) = await Testbed.RunAsync("dpkg-query", ["--admindir", InRoot("/var/lib/dpkg"), "-W", "-f", "${Version} ${db:Status-Abbrev}", "gpu-executor"], null, _work);
        return stdout.Trim();
    }

    [Fact]
    public async Task It_installs_runs_from_usr_bin_keeps_an_edited_conffile_through_reinstall_and_upgrade_and_purge_removes_it()
    {
        RequirePackage();
        Directory.CreateDirectory(InRoot("/var/lib/dpkg/info"));
        Directory.CreateDirectory(InRoot("/var/lib/dpkg/updates"));
        File.WriteAllText(InRoot("/var/lib/dpkg/status"), "");

        await DpkgAsync("--install", Package);
        var binary = InRoot("/usr/bin/gpu-executor");
        var config = InRoot("/etc/gpu-executor/config.toml");
        var (versionExit, version, _) = await Testbed.RunAsync(binary, ["--version"], null, _work);
        Assert.Equal(0, versionExit);
        Assert.Matches(@"^\d+\.\d+\.\d+\n$", version);
        Assert.StartsWith(version.Trim() + " ii", await InstalledVersionAsync());
        Assert.Equal(File.ReadAllText(Path.Combine(Testbed.RepositoryRoot, "config.toml.example")), File.ReadAllText(config));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute,
            File.GetUnixFileMode(InRoot("/var/lib/gpu-executor")));
        Assert.True(File.Exists(InRoot("/usr/share/man/man1/gpu-executor.1.gz")));
        Assert.True(File.Exists(InRoot("/usr/share/doc/gpu-executor/copyright")));

        // doctor runs from /usr/bin with the packaged config, its state_dir moved into the
        // scratch root so that its probes and its admin log line stay there. This host has no
        // dockerd on the default socket and no GPU, so some checks fail, each on a line of its own.
        var doctorConfig = Path.Combine(_work, "doctor.toml");
        File.WriteAllText(doctorConfig, File.ReadAllText(config).Replace("state_dir = \"/var/lib/gpu-executor\"", $"state_dir = \"{InRoot("/var/lib/gpu-executor")}\"", StringComparison.Ordinal));
        var (doctorExit, doctor, doctorError) = await Testbed.RunAsync(binary, ["--config", doctorConfig, "doctor"], null, _work);
        Assert.True(doctorExit is 0 or 3, $"doctor exited {doctorExit}:\n{doctor}{doctorError}");
        Assert.Contains("PASS  config", doctor);
        Assert.Matches(@"\d+ checks: \d+ passed, \d+ warned, \d+ failed\.", doctor);
        Assert.Contains("\"verb\":\"doctor\"", File.ReadAllText(InRoot("/var/lib/gpu-executor/log/events.jsonl")));

        // The admin's edit survives a reinstall of the same version and an upgrade.
        var edited = File.ReadAllText(config).Replace("stop_grace_seconds = 30", "stop_grace_seconds = 45", StringComparison.Ordinal);
        Assert.NotEqual(File.ReadAllText(config), edited);
        File.WriteAllText(config, edited);
        await DpkgAsync("--install", Package);
        Assert.Equal(edited, File.ReadAllText(config));
        var upgrade = await RebuildAsAsync(version.Trim() + "+upgrade1");
        await DpkgAsync("--install", upgrade);
        Assert.StartsWith(version.Trim() + "+upgrade1 ii", await InstalledVersionAsync());
        Assert.Equal(edited, File.ReadAllText(config));

        // Remove keeps the conffile (Debian's rc state); purge removes it and the directory.
        await DpkgAsync("--remove", "gpu-executor");
        Assert.False(File.Exists(binary));
        Assert.Equal(edited, File.ReadAllText(config));
        Assert.StartsWith(version.Trim() + "+upgrade1 rc", await InstalledVersionAsync());
        await DpkgAsync("--purge", "gpu-executor");
        Assert.False(File.Exists(config));
        Assert.False(Directory.Exists(InRoot("/etc/gpu-executor")));
        Assert.Equal("", await InstalledVersionAsync());
    }

    [Fact]
    public async Task The_gc_and_metrics_timers_and_their_services_pass_systemd_analyze_verify_and_a_broken_timer_does_not()
    {
        RequirePackage();
        if (!File.Exists("/usr/bin/systemd-analyze"))
            Assert.Skip("no systemd-analyze on this host");
        var (exitCode, _, stderr) = await Testbed.RunAsync("dpkg-deb", ["-x", Package, _root], null, _work);
        Assert.True(exitCode == 0, stderr);
        // verify --root resolves the units' dependencies (timers.target, sysinit.target) inside
        // the root: give it the host's targets, as an installed system would have them.
        var targets = Directory.CreateDirectory(InRoot("/usr/lib/systemd/system")).FullName;
        foreach (var target in Directory.GetFiles("/lib/systemd/system", "*.target"))
            File.Copy(target, Path.Combine(targets, Path.GetFileName(target)), overwrite: true);

        async Task<(int ExitCode, string Output)> VerifyAsync()
        {
            var (code, stdout, errors) = await Testbed.RunAsync("systemd-analyze",
                ["verify", "--root", _root, "--man=no", "/lib/systemd/system/gpu-executor-gc.timer", "/lib/systemd/system/gpu-executor-gc.service",
                 "/lib/systemd/system/gpu-executor-metrics.timer", "/lib/systemd/system/gpu-executor-metrics.service"], null, _work);
            return (code, stdout + errors);
        }

        var (verified, output) = await VerifyAsync();
        Assert.True(verified == 0, output);
        Assert.Contains("OnCalendar=hourly", File.ReadAllText(InRoot("/lib/systemd/system/gpu-executor-gc.timer")));
        Assert.Contains("OnUnitActiveSec=30s", File.ReadAllText(InRoot("/lib/systemd/system/gpu-executor-metrics.timer")));

        var timer = InRoot("/lib/systemd/system/gpu-executor-gc.timer");
        File.WriteAllText(timer, File.ReadAllText(timer).Replace("OnCalendar=hourly", "OnCalendar=every hour", StringComparison.Ordinal));
        var (broken, brokenOutput) = await VerifyAsync();
        Assert.NotEqual(0, broken);
        Assert.Contains("calendar", brokenOutput, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Lintian_reports_no_error_and_no_warning_that_is_not_overridden()
    {
        RequirePackage();
        if (!File.Exists("/usr/bin/lintian"))
            Assert.Skip("no lintian on this host (scripts/testbed.sh installs it)");
        var (exitCode, stdout, stderr) = await Testbed.RunAsync("lintian", ["--fail-on", "error,warning", "--tag-display-limit", "0", Package], null, _work, TimeSpan.FromMinutes(5));
        var tags = (stdout + stderr).Split('\n').Where(line => line.Length > 2 && line[1] == ':' && line[0] is 'E' or 'W').ToList();
        Assert.True(exitCode == 0 && tags.Count == 0, $"lintian ({exitCode}):\n{stdout}{stderr}");
    }
}
