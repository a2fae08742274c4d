using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GpuExecutor.Simulation;

/// <summary>
/// Starts a program the way gitlab-runner starts executor calls: in a process group of its own
/// (helpers/process: Setpgid), stdin empty, a given working directory and environment, with
/// stdout and stderr streamed line by line. The group can then be signalled as a whole.
/// </summary>
public sealed partial class ProcessGroup : IDisposable
{
    public const int SigKill = 9;
    public const int SigTerm = 15;

    private readonly Process _process;
    private readonly Task _pump;

    private ProcessGroup(Process process, Task pump)
    {
        _process = process;
        _pump = pump;
    }

    public int Id => _process.Id;

    /// <param name="onOutput">
    /// Called with each chunk of stdout (false) or stderr (true) as it arrives. Chunks, not lines:
    /// GitLab's section markers carry a bare '\r' that a line reader would split on.
    /// </param>
    public static ProcessGroup Start(
        string executable,
        IReadOnlyList<string> arguments,
        string workingDirectory,
        IReadOnlyDictionary<string, string> environment,
        Action<string, bool> onOutput)
    {
        // setsid(1) makes the program leader of a new session and process group without forking
        // (we are not a group leader), so its pid is also the group id we signal.
        var start = new ProcessStartInfo("setsid")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(executable);
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        foreach (var (key, value) in environment)
            start.Environment[key] = value;

        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {executable}");
        process.StandardInput.Close();
        var pump = Task.WhenAll(
            PumpAsync(process.StandardOutput, chunk => onOutput(chunk, false)),
            PumpAsync(process.StandardError, chunk => onOutput(chunk, true)));
        return new ProcessGroup(process, pump);
    }

    private static async Task PumpAsync(StreamReader reader, Action<string> onChunk)
    {
        var buffer = new char[8192];
        int read;
        while ((read = await reader.ReadAsync(buffer)) > 0)
            onChunk(new string(buffer, 0, read));
    }

    /// <summary>Waits for the process and for its output to drain; null when the limit passed first.</summary>
    public async Task<int?> WaitAsync(TimeSpan limit)
    {
        using var timeout = limit == Timeout.InfiniteTimeSpan ? new CancellationTokenSource() : new CancellationTokenSource(limit);
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        // Output can outlive the process when a grandchild keeps the pipe; do not wait forever.
        await Task.WhenAny(_pump, Task.Delay(TimeSpan.FromSeconds(5)));
        // .NET reports a death by signal as 128 + signal, which the runner also counts as a failure.
        return _process.ExitCode;
    }

    /// <summary>Sends a signal to the whole process group, as the runner does on cancel and timeout.</summary>
    public void SignalGroup(int signal)
    {
        try
        {
            if (!_process.HasExited)
                _ = Kill(-_process.Id, signal);
        }
        catch (InvalidOperationException)
        {
            // Already disposed: the call was abandoned after a job timeout and has been reaped.
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public void Dispose() => _process.Dispose();
}
