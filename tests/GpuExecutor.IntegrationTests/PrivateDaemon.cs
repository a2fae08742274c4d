namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A dockerd of its own in a directory of its own: a host whose daemon the test may stop, or one
/// of two hosts sharing the test bed's s3rver (scripts/testbed.sh daemon-start and daemon-stop).
/// </summary>
internal sealed class PrivateDaemon : IAsyncDisposable
{
    private readonly bool _liveRestore;

    private PrivateDaemon(string directory, bool liveRestore)
    {
        Directory = directory;
        _liveRestore = liveRestore;
    }

    public string Directory { get; }
    public string Endpoint => $"unix://{Directory}/docker.sock";

    /// <param name="liveRestore">Off, a daemon restart stops every container, as on hosts that never turned it on.</param>
    public static async Task<PrivateDaemon> StartAsync(bool liveRestore = true)
    {
        var daemon = new PrivateDaemon(System.IO.Directory.CreateTempSubdirectory("gpu-executor-host-").FullName, liveRestore);
        await daemon.StartAgainAsync();
        return daemon;
    }

    public Task StartAgainAsync() => TestbedScriptAsync("daemon-start");

    /// <summary>dockerd and every container it ran are gone, as on a host that lost Docker.</summary>
    public Task StopWithContainersAsync() => TestbedScriptAsync("daemon-stop");

    /// <summary>
    /// The host dies: in one go, every process whose command line names <paramref name="executorRoot"/>
    /// (the runner's simulator, `run`, the checkpoint agent), every container's processes and dockerd
    /// stop, as a power cut stops them all at once; then what is left is cleaned up.
    /// The executor's processes are frozen (SIGSTOP) before anything is killed, so the agent
    /// commits nothing while the trainer is being killed, and the trainer is killed before the
    /// slow cleanup, so it trains no step its host could no longer commit. The paths travel in
    /// the environment, not the script's arguments: `pkill -f` would match the script's own
    /// shell by its command line and kill it before the rest ran.
    /// </summary>
    public async Task LoseAsync(string executorRoot)
    {
        const string powerCut = """
            pkill -STOP -f "$LOST_EXECUTOR_ROOT"
            for shim in $(pgrep -f "containerd-shim.*$LOST_DAEMON_DIRECTORY"); do pkill -KILL -P "$shim"; done
            kill -KILL "$(cat "$LOST_DAEMON_DIRECTORY/docker.pid")"
            pkill -KILL -f "$LOST_EXECUTOR_ROOT"
            exit 0
            """;
        var (exitCode, stdout, stderr) = await Testbed.RunAsync("bash", ["-c", powerCut],
            new Dictionary<string, string?> { ["LOST_EXECUTOR_ROOT"] = executorRoot, ["LOST_DAEMON_DIRECTORY"] = Directory }, null);
        Assert.True(exitCode == 0, $"the power cut's script failed: {stdout}{stderr}");
        await StopWithContainersAsync();
    }

    /// <summary>Only dockerd stops, as in a daemon restart: with live-restore its containers go on; without, it stops them first.</summary>
    public async Task StopDaemonOnlyAsync()
    {
        var pid = int.Parse((await File.ReadAllTextAsync(Path.Combine(Directory, "docker.pid"))).Trim());
        using var dockerd = System.Diagnostics.Process.GetProcessById(pid);
        await Testbed.RunAsync("kill", ["-TERM", pid.ToString()], null, null);
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await dockerd.WaitForExitAsync(limit.Token);
    }

    public Task<string> DockerAsync(params string[] arguments) =>
        Testbed.RunAsync("docker", ["--host", Endpoint, .. arguments], null, null).ContinueWith(task => task.Result.Stdout, TaskScheduler.Default);

    private async Task TestbedScriptAsync(string verb)
    {
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(
            Path.Combine(Testbed.RepositoryRoot, "scripts", "testbed.sh"), [verb],
            new Dictionary<string, string?> { ["GPU_EXECUTOR_TESTBED_DIR"] = Directory, ["GPU_EXECUTOR_TESTBED_LIVE_RESTORE"] = _liveRestore ? "1" : "0" }, Testbed.RepositoryRoot, TimeSpan.FromMinutes(2));
        Assert.True(exitCode == 0, $"testbed.sh {verb} failed: {stdout}{stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        await StopWithContainersAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // A mount the kernel lets go of lazily; the temp directory is all that stays.
        }
    }
}
