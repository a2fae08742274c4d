using System.Buffers;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Stages;

/// <summary>How a stage ended.</summary>
/// <param name="ExitCode">The script's own exit code, as bash reported it.</param>
/// <param name="Stopped">True when a stop request (cancel, timeout, shutdown) ended it.</param>
public sealed record StageResult(int ExitCode, bool Stopped);

/// <summary>
/// Runs one stage script in a job container through its <see cref="StageServer"/>, streams the
/// output live, and stops the stage on request. The stop follows CliWrap's graceful/forceful
/// pair: the configured signal to the stage's processes, then SIGKILL after the grace period.
/// </summary>
public sealed class StageRunner(IContainerDriver driver, RunSettings settings, Action<string> log)
{
    /// <summary>After SIGKILL the stage's trailer should come at once; past this we give up on it.</summary>
    private static readonly TimeSpan AfterKillWait = TimeSpan.FromSeconds(10);

    private static readonly TimeSpan AttachTimeout = TimeSpan.FromSeconds(60);

    public async Task<StageResult> RunAsync(
        string container,
        ReadOnlyMemory<byte> script,
        Stream stdout,
        Stream stderr,
        CancellationToken stopRequested)
    {
        var nonce = StageServer.NewNonce();
        using var attachTimeout = new CancellationTokenSource(AttachTimeout);
        using var attachment = await driver.AttachAsync(container, attachTimeout.Token);
        // Docker accepts an attach to a stopped container and then sends nothing, ever. Checked
        // after attaching: if the container stops later, the daemon ends the stream instead.
        var state = await driver.InspectStateAsync(container, attachTimeout.Token) ?? throw new ContainerNotFoundException(container);
        if (!state.Running)
            throw new ContainerEngineException($"container '{container}' is not running (its main process exited with {state.ExitCode}).");
        await attachment.WriteAsync(StageServer.RunRequest(nonce, script.Span), attachTimeout.Token);

        using var abandon = new CancellationTokenSource();
        var execution = StreamUntilTrailerAsync(attachment, nonce, stdout, stderr, container, abandon.Token);

        var stop = new TaskCompletionSource();
        await using (stopRequested.Register(() => stop.TrySetResult()))
        {
            if (await Task.WhenAny(execution, stop.Task) == execution)
                return new StageResult(await execution, Stopped: false);
        }

        log($"Stop requested: sending SIG{settings.StopSignal} to the stage's processes in {container}, SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s.");
        await SignalAsync(attachment, nonce, settings.StopSignal, container);
        var endedGracefully = await WaitAsync(execution, settings.StopGracePeriod);
        if (!endedGracefully)
            log($"The stage is still running after {settings.StopGracePeriod.TotalSeconds:0} s: sending SIGKILL.");

        // Also after a graceful end: a child that ignored the signal must not outlive the stage.
        await SignalAsync(attachment, nonce, "KILL", container);
        if (!endedGracefully && !await WaitAsync(execution, AfterKillWait))
        {
            abandon.Cancel();
            throw new SystemFailureException($"the stage in container '{container}' did not end {AfterKillWait.TotalSeconds:0} s after SIGKILL.");
        }

        return new StageResult(await execution, Stopped: true);
    }

    private static async Task<int> StreamUntilTrailerAsync(
        IContainerAttachment attachment,
        string nonce,
        Stream stdout,
        Stream stderr,
        string container,
        CancellationToken cancellationToken)
    {
        var scanner = new StageTrailerScanner(nonce);
        var buffer = new byte[81920];
        var passThrough = new ArrayBufferWriter<byte>(buffer.Length);
        while (true)
        {
            var chunk = await attachment.ReadAsync(buffer, cancellationToken);
            if (chunk.EndOfStream)
                throw new ContainerEngineException($"container '{container}' closed its output before the stage ended (the container stopped or was removed).");
            if (chunk.IsStderr)
            {
                await stderr.WriteAsync(buffer.AsMemory(0, chunk.Count), cancellationToken);
                continue;
            }

            passThrough.ResetWrittenCount();
            scanner.Feed(buffer.AsSpan(0, chunk.Count), passThrough);
            if (passThrough.WrittenCount > 0)
                await stdout.WriteAsync(passThrough.WrittenMemory, cancellationToken);
            if (scanner.ExitCode is { } exitCode)
                return exitCode;
        }
    }

    private async Task SignalAsync(IContainerAttachment attachment, string nonce, string signal, string container)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await attachment.WriteAsync(StageServer.SignalRequest(nonce, signal), timeout.Token);
        }
        catch (Exception error) when (error is ContainerEngineException or OperationCanceledException)
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
