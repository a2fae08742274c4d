using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Stages;

/// <summary>How a stage ended.</summary>
/// <param name="ExitCode">The script's own exit code, as bash reported it.</param>
/// <param name="Stopped">True when a stop request (cancel, timeout, shutdown) ended it.</param>
public sealed record StageResult(long ExitCode, bool Stopped);

/// <summary>
/// Runs one stage script inside a container through the engine's exec API, and stops it on
/// request. The two tokens follow CliWrap's graceful/forceful pair: a stop request sends the
/// configured signal to the stage's processes, and SIGKILL follows after the grace period.
/// </summary>
public sealed class StageRunner(IContainerDriver driver, RunSettings settings, Action<string> log)
{
    /// <summary>After SIGKILL the exec's stream should close at once; past this we give up on it.</summary>
    private static readonly TimeSpan AfterKillWait = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Every process in the container but PID 1 and itself: kill(-1) in the container's PID
    /// namespace. A container runs one stage at a time, so that is exactly the stage's process
    /// tree, including children that started their own process groups or sessions. The signal
    /// name comes from a fixed allowlist and travels as an argument, never inside the script.
    /// </summary>
    private static readonly IReadOnlyList<string> SignalEveryStageProcess =
        ["bash", "-c", "kill -s \"$0\" -1 2>/dev/null; exit 0"];

    public async Task<StageResult> RunAsync(
        string container,
        Stream script,
        Stream stdout,
        Stream stderr,
        CancellationToken stopRequested)
    {
        using var abandon = new CancellationTokenSource();
        var execution = driver.ExecAsync(container, ["bash"], script, stdout, stderr, abandon.Token);

        var stop = new TaskCompletionSource();
        await using (stopRequested.Register(() => stop.TrySetResult()))
        {
            if (await Task.WhenAny(execution, stop.Task) == execution)
                return new StageResult(await execution, Stopped: false);
        }

        log($"Stop requested: sending SIG{settings.StopSignal} to the stage's processes in {container}, SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s.");
        await SignalAsync(container, settings.StopSignal);
        var endedGracefully = await WaitAsync(execution, settings.StopGracePeriod);
        if (!endedGracefully)
            log($"The stage is still running after {settings.StopGracePeriod.TotalSeconds:0} s: sending SIGKILL.");

        // Also on a graceful end: a child that ignored the signal must not outlive the stage.
        await SignalAsync(container, "KILL");
        if (!endedGracefully && !await WaitAsync(execution, AfterKillWait))
        {
            abandon.Cancel();
            throw new SystemFailureException($"the stage in container '{container}' did not end {AfterKillWait.TotalSeconds:0} s after SIGKILL.");
        }

        return new StageResult(await execution, Stopped: true);
    }

    private async Task SignalAsync(string container, string signal)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await driver.ExecAsync(container, [.. SignalEveryStageProcess, signal], null, Stream.Null, Stream.Null, timeout.Token);
        }
        catch (ContainerEngineException error)
        {
            // A container that is gone has no processes left to stop.
            log($"Could not signal the stage's processes in {container}: {error.Message}");
        }
    }

    private static async Task<bool> WaitAsync(Task execution, TimeSpan limit)
    {
        var finished = await Task.WhenAny(execution, Task.Delay(limit));
        return finished == execution;
    }
}
