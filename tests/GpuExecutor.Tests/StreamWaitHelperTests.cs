using System.Diagnostics;
using GpuExecutor.Datasets;

namespace GpuExecutor.Tests;

/// <summary>
/// examples/datasets/stream_wait.py, the loader's helper for streamed datasets, run by the
/// host's python3 against a view laid out as the stream fetcher lays it out.
/// </summary>
public sealed class StreamWaitHelperTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-stream-wait").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static string Helper => Path.Combine(RepositoryRoot.Path, "examples", "datasets", "stream_wait.py");

    private string View(bool failed)
    {
        var view = Directory.CreateDirectory(Path.Combine(_root, "views", "0")).FullName;
        DatasetStreams.WriteIndex(view, new StreamIndex(false, failed ? "object 'shards/b.tar' of s3://corpus could not be fetched: 503" : null,
            [new StreamIndexEntry("a.tar", 1, true), new StreamIndexEntry("b.tar", 1, false)]));
        return view;
    }

    private Process StartHelper(string path)
    {
        var start = new ProcessStartInfo("python3", [Helper, path])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            Environment = { ["GPU_EXECUTOR_DATASET_WAITS"] = Path.Combine(_root, DatasetStreams.WaitsFileName) },
        };
        return Process.Start(start)!;
    }

    private static async Task<(int ExitCode, string Output)> FinishAsync(Process process, string earlierOutput = "")
    {
        var output = earlierOutput + await process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken) + await process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await process.WaitForExitAsync(TestContext.Current.CancellationToken);
        return (process.ExitCode, output);
    }

    [Fact]
    public async Task It_returns_once_the_file_arrives_and_records_the_wait()
    {
        Assert.SkipWhen(!File.Exists("/usr/bin/python3"), "no python3 on this host to run the example helper with");
        var view = View(failed: false);
        var shard = Path.Combine(view, "b.tar");
        using var helper = StartHelper(shard);

        // The file arrives only after the helper has found it missing and begun to wait, so the
        // wait is real however slowly python starts on a busy machine.
        var announcement = await helper.StandardError.ReadLineAsync(TestContext.Current.CancellationToken);
        Assert.Equal($"waiting for {shard}", announcement);
        await File.WriteAllTextAsync(shard, "b", TestContext.Current.CancellationToken);
        var (exitCode, output) = await FinishAsync(helper, announcement + "\n");

        Assert.True(exitCode == 0, output);
        Assert.Equal(shard + "\n", output[(announcement!.Length + 1)..]);
        var wait = File.ReadAllText(Path.Combine(_root, DatasetStreams.WaitsFileName)).Split(' ');
        Assert.True(double.Parse(wait[0], System.Globalization.CultureInfo.InvariantCulture) > 0, string.Join(' ', wait));
        Assert.Equal(shard + "\n", wait[1]);
        var recorded = DatasetStreams.ReadWaits(_root);
        Assert.Equal(1, recorded?.Waits);
    }

    [Fact]
    public async Task It_fails_naming_the_object_when_the_stream_failed()
    {
        Assert.SkipWhen(!File.Exists("/usr/bin/python3"), "no python3 on this host to run the example helper with");
        var view = View(failed: true);

        using var helper = StartHelper(Path.Combine(view, "b.tar"));
        var (exitCode, output) = await FinishAsync(helper);

        Assert.NotEqual(0, exitCode);
        Assert.Contains("StreamFailed", output);
        Assert.Contains("object 'shards/b.tar' of s3://corpus could not be fetched: 503", output);
    }

    [Fact]
    public void Waits_are_read_without_following_a_symlink_and_bad_lines_are_skipped()
    {
        File.WriteAllText(Path.Combine(_root, "elsewhere"), "5 /data/x\n");
        File.CreateSymbolicLink(Path.Combine(_root, DatasetStreams.WaitsFileName), Path.Combine(_root, "elsewhere"));
        Assert.Null(DatasetStreams.ReadWaits(_root));

        File.Delete(Path.Combine(_root, DatasetStreams.WaitsFileName));
        File.WriteAllText(Path.Combine(_root, DatasetStreams.WaitsFileName), "1.5 /data/a\nnonsense\n-3 /data/b\n2 /data/c\n");
        Assert.Equal((3.5, 2), DatasetStreams.ReadWaits(_root));
    }
}
