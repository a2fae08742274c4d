using System.Diagnostics;

namespace GpuExecutor.IntegrationTests;

public sealed class StreamingTests
{
    [Fact]
    public async Task A_stage_that_prints_hundreds_of_megabytes_streams_them_all_with_flat_memory()
    {
        // A budget past the output: the job log gets all of it live, as a runner with a large
        // output_limit would (the throttled view has its own test, FullLogTests).
        using var workspace = new ExecutorWorkspace(extraConfig: "[logs]\njob_log_budget = 1099511627776\n");
        const long jobId = 7401;
        const long outputBytes = 256L << 20;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId));
        Assert.Equal(0, (await workspace.CallVerbAsync(environment, "prepare")).ExitCode);
        try
        {
            var script = Path.Combine(workspace.Root, "script");
            File.WriteAllText(script, $"head -c {outputBytes} /dev/zero | tr '\\0' 'x'\necho\necho done >&2\n");

            var start = new ProcessStartInfo(Testbed.Binary, ["--config", workspace.ConfigPath, "run", script, "build_script"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var (key, value) in environment)
                start.Environment[key] = value;
            using var run = Process.Start(start)!;

            long peakResidentKib = 0;
            using var sampling = new CancellationTokenSource();
            var sampler = Task.Run(async () =>
            {
                while (!sampling.IsCancellationRequested)
                {
                    peakResidentKib = Math.Max(peakResidentKib, ReadPeakResidentKib(run.Id));
                    await Task.Delay(50, CancellationToken.None);
                }
            }, TestContext.Current.CancellationToken);
            var stderr = run.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            long received = 0;
            var buffer = new byte[1 << 16];
            int read;
            while ((read = await run.StandardOutput.BaseStream.ReadAsync(buffer, TestContext.Current.CancellationToken)) > 0)
                received += read;
            await run.WaitForExitAsync(TestContext.Current.CancellationToken);
            sampling.Cancel();
            await sampler;

            Assert.Equal(0, run.ExitCode);
            Assert.Equal(outputBytes + 1, received);
            Assert.Equal("done\n", await stderr);
            // The whole output is 256 MiB; the executor must hold a bounded buffer, not the output.
            Assert.InRange(peakResidentKib, 1, 96 * 1024);
        }
        finally
        {
            await workspace.CallVerbAsync(environment, "cleanup");
        }
    }

    /// <summary>VmHWM, the process's peak resident set so far; 0 once it is gone.</summary>
    private static long ReadPeakResidentKib(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(text => text.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
