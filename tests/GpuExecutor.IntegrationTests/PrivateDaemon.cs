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
    /// get SIGKILL, as a power cut stops them all at once; then what is left is cleaned up.
    /// </summary>
    public async Task LoseAsync(string executorRoot)
    {
        await Testbed.RunAsync("bash", ["-c", "pkill -KILL -f \"$1\"; for shim in $(pgrep -f \"containerd-shim.*$2\"); do pkill -KILL -P \"$shim\"; done; kill -KILL \"$(cat \"$2/docker.pid\")\"", "lose", executorRoot, Directory], null, null);
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
