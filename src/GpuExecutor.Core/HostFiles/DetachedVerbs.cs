using System.Globalization;

namespace GpuExecutor.HostFiles;

/// <summary>The executor's detached processes (`checkpoints agent JOB …`, `datasets stream JOB`), told apart by their command lines.</summary>
public static class DetachedVerbs
{
    /// <summary>
    /// Whether process <paramref name="pid"/> runs `NOUN VERB JOB`: a pid from a status file,
    /// once its process is gone, may be anyone's, and must never be signalled on its word alone.
    /// </summary>
    public static bool Runs(int pid, string noun, string verb, long jobId)
    {
        try
        {
            var arguments = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/cmdline").Split('\0');
            var at = Array.IndexOf(arguments, verb);
            return at > 0 && arguments[at - 1] == noun && at + 1 < arguments.Length
                && arguments[at + 1] == jobId.ToString(CultureInfo.InvariantCulture);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
