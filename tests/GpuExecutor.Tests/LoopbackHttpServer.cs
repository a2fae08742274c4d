using System.Net;

namespace GpuExecutor.Tests;

/// <summary>
/// An <see cref="HttpListener"/> on a free loopback port that hands each request to a handler on
/// a task of its own: what the tests' stand-in servers (the fake GitLab API, the S3 proxy) share.
/// </summary>
public sealed class LoopbackHttpServer : IDisposable
{
    private readonly HttpListener _listener;
    private readonly Task _serving;

    public LoopbackHttpServer(Func<HttpListenerContext, Task> handle)
    {
        // HttpListener cannot bind port 0: take a port the kernel just handed out, and try again
        // should another process take it first. A listener whose Start failed is disposed by it,
        // so each attempt has a listener of its own.
        for (var attempt = 0; ; attempt++)
        {
            var listener = new HttpListener();
            Url = $"http://127.0.0.1:{FreePort()}";
            listener.Prefixes.Add(Url + "/");
            try
            {
                listener.Start();
                _listener = listener;
                break;
            }
            catch (HttpListenerException) when (attempt < 20)
            {
            }
        }
        _serving = Task.Run(() => ServeAsync(handle));
    }

    private static int FreePort()
    {
        using var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    /// <summary>http://127.0.0.1:PORT, without a trailing slash.</summary>
    public string Url { get; }

    /// <summary>Answers with a JSON body, as the fake APIs do; a client that hung up is no error.</summary>
    public static async Task ReplyJsonAsync(HttpListenerContext context, HttpStatusCode status, string body)
    {
        try
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(body);
            context.Response.StatusCode = (int)status;
            context.Response.ContentType = "application/json";
            context.Response.ContentLength64 = bytes.Length;
            await context.Response.OutputStream.WriteAsync(bytes);
            context.Response.Close();
        }
        catch (Exception error) when (error is HttpListenerException or IOException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(Func<HttpListenerContext, Task> handle)
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception error) when (error is HttpListenerException or ObjectDisposedException)
            {
                return;
            }
            _ = Task.Run(() => handle(context));
        }
    }

    public void Dispose()
    {
        try
        {
            _listener.Stop();
            _listener.Close();
        }
        catch (HttpListenerException)
        {
            // .NET's managed listener looks its port up again to close it, and fails when
            // another process has the port by then: the listener is closed either way.
        }
        _serving.Wait(TimeSpan.FromSeconds(5));
    }
}
